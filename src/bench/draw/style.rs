//! The charts' style: each row's colour and line, the same in every chart, and how wide a
//! text is taken to be when [`super::chart`] places it.

use crate::bench::model::{NodeServer, RowId};

/// A character's width, in ems, for placing text: a sans-serif's average is about 0.5 em
/// (digits 0.55), so text measured at 0.6 fits where it is put; bold text gets 0.65.
const EM_PER_CHAR: f64 = 0.6;
const BOLD_EM_PER_CHAR: f64 = 0.65;

/// How wide `text` is, at most, at `px` (bold or not).
pub(super) fn width(text: &str, px: f64, bold: bool) -> f64 {
    let em = if bold { BOLD_EM_PER_CHAR } else { EM_PER_CHAR };
    text.chars().count() as f64 * px * em
}

/// `text` cut into lines of at most `max` characters, at spaces (a longer word alone).
pub(super) fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= max => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// offload's strategies' colours, by their place in [`crate::strategy::Name::GATEWAY`]
/// (inline, spawn, blocking, pool, remote, queue, auto); the last is spare, for a strategy
/// added later.
const OFFLOAD: [&str; 8] = [
    "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#1f77b4", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A row's colour: the same in every chart, keyed by its name, each distinct. A Node server
/// takes a light shade of its offload counterpart's hue where one is free.
pub(super) fn colour(row: RowId) -> &'static str {
    match row {
        RowId::Offload(n) => OFFLOAD[n.index() % OFFLOAD.len()],
        RowId::Node(n) => match n {
            NodeServer::Inline => "#ff9896",
            NodeServer::Worker => "#ffbb78",
            NodeServer::Piscina => "#17becf",
            NodeServer::PiscinaNice => "#9edae5",
            NodeServer::Remote => "#aec7e8",
            NodeServer::Bullmq => "#c49c94",
        },
        RowId::LowPriority(_) => "#98df8a",
        RowId::LightAlone => "#bcbd22",
    }
}

/// Node's rows are dashed in the line charts, beside offload's solid ones.
pub(super) fn dashes(row: RowId) -> &'static str {
    if row.node().is_some() {
        r#" stroke-dasharray="7 3""#
    } else {
        ""
    }
}

/// The backlog chart's accepted jobs: a grey that is no row's colour.
pub(super) const ACCEPTED: &str = "#555";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Name;

    /// Every row the report can have, each in a colour of its own.
    #[test]
    fn each_row_has_a_colour_of_its_own() {
        let mut rows: Vec<RowId> = Name::GATEWAY.into_iter().map(RowId::Offload).collect();
        rows.extend(NodeServer::ALL.into_iter().map(RowId::Node));
        let pool = Name::parse("pool").unwrap();
        rows.extend([RowId::LowPriority(pool), RowId::LightAlone]);
        let colours: std::collections::HashSet<&str> = rows.iter().map(|&r| colour(r)).collect();
        assert_eq!(colours.len(), rows.len(), "{rows:?}");
        assert!(!colours.contains(ACCEPTED));
        assert_ne!(
            colour(RowId::parse("pool").unwrap()),
            colour(RowId::parse("auto").unwrap())
        );
    }

    /// Each strategy keeps its colour, whatever its place in the palette.
    #[test]
    fn the_strategies_keep_their_colours() {
        let colours: Vec<(&str, &str)> = Name::GATEWAY
            .into_iter()
            .map(|n| (n.as_str(), colour(RowId::Offload(n))))
            .collect();
        assert_eq!(
            colours,
            [
                ("inline", "#d62728"),
                ("spawn", "#ff7f0e"),
                ("blocking", "#9467bd"),
                ("pool", "#2ca02c"),
                ("remote", "#1f77b4"),
                ("queue", "#8c564b"),
                ("auto", "#e377c2"),
            ]
        );
    }

    #[test]
    fn headings_wrap_at_spaces_within_the_width() {
        let title =
            "CPU of the strategy's processes per second (gateway, compute service, worker: summed)";
        let lines = wrap(title, 60);
        assert_eq!(
            lines,
            [
                "CPU of the strategy's processes per second (gateway, compute",
                "service, worker: summed)"
            ]
        );
        assert_eq!(lines.join(" "), title);
        assert!(lines.iter().all(|l| l.chars().count() <= 60));
        assert_eq!(wrap("short", 60), ["short"]);
        assert_eq!(width("ab", 10.0, false), 12.0);
    }
}
