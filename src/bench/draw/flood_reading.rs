//! The flood's reading: per strategy, goodput and refusals at the largest count against the
//! smallest, the gateway's CPU, and what a client that honours `Retry-After` changed; with
//! `--repeat`, the medians of the repeats.

use super::flood::{per_s, percent};
use super::units::ms;
use crate::bench::model::{FloodRow, RowId, over_repeats};

/// The sentences that read the rows: per strategy, the flood against the smallest count,
/// then what honouring `Retry-After` changed. With `--repeat`, each figure is the median of
/// the row's repeats, said once in a first sentence, and "refused nothing" holds for every
/// repeat.
pub fn reading(rows: &[FloodRow], counts: &[u32], repeat: u32) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(&low), Some(&top)) = (counts.first(), counts.last()) else {
        return out;
    };
    let mut names: Vec<RowId> = Vec::new();
    for r in rows {
        if !names.contains(&r.strategy) {
            names.push(r.strategy);
        }
    }
    let median = |r: &FloodRow, name: &str| over_repeats(r, name, |s| s.median);
    let most = |r: &FloodRow, name: &str| over_repeats(r, name, |s| s.max);
    for name in names {
        let find = |c: u32, honour: bool| {
            rows.iter()
                .find(|r| r.strategy == name && r.connections == c && r.honor_retry_after == honour)
        };
        let (base, flood, honoured) = (find(low, false), find(top, false), find(top, true));
        if let (Some(b), Some(f)) = (base, flood)
            && low != top
        {
            let goodput = median(f, "goodput_per_s").unwrap_or(0.0);
            let base_goodput = median(b, "goodput_per_s").unwrap_or(0.0);
            out.push(format!(
                "{name}: at -c {top} goodput was {goodput:.1}/s ({:.2}x its {base_goodput:.1}/s at -c {low}), with {} refusals/s; its gateway used {} of the machine{}.",
                goodput / base_goodput.max(1e-9),
                per_s(median(f, "refused_per_s").unwrap_or(0.0)),
                percent(median(f, "gateway_cpu_fraction")),
                median(f, "gateway_cpu_s_per_refusal").map_or(String::new(), |c| format!(
                    " ({} of its CPU per refusal at most)",
                    ms(c * 1000.0)
                ))
            ));
        }
        let Some((f, h)) = flood.zip(honoured) else {
            continue;
        };
        let (f_goodput, h_goodput) = (
            median(f, "goodput_per_s").unwrap_or(0.0),
            median(h, "goodput_per_s").unwrap_or(0.0),
        );
        let refused_none = [
            most(f, "refused_per_s"),
            most(h, "refused_per_s"),
            most(h, "retry_after_asked"),
        ]
        .iter()
        .all(|v| v.unwrap_or(0.0) == 0.0);
        if refused_none {
            out.push(format!(
                "{name} refused nothing at -c {top}, so a client that honours Retry-After had nothing to wait for (goodput {h_goodput:.1}/s against {f_goodput:.1}/s).",
            ));
        } else {
            out.push(format!(
                "{name} at -c {top} with a client that honours Retry-After: {} refusals/s instead of {}, goodput {h_goodput:.1}/s instead of {f_goodput:.1}/s; the client waited {:.0}% of its time, as {:.0} answers asked.",
                per_s(median(h, "refused_per_s").unwrap_or(0.0)),
                per_s(median(f, "refused_per_s").unwrap_or(0.0)),
                median(h, "waited_fraction").unwrap_or(0.0) * 100.0,
                median(h, "retry_after_asked").unwrap_or(0.0)
            ));
        }
    }
    if repeat > 1 && !out.is_empty() {
        let fewer = rows.iter().any(|r| r.runs < repeat as usize);
        out.insert(
            0,
            format!(
                "Each figure below is the median of {repeat} repeats of its row{}.",
                if fewer {
                    " (of fewer where a repeat failed)"
                } else {
                    ""
                }
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::{self, FloodPlant};

    /// pool's rows at -c 100, -c 1000 and -c 1000 honouring Retry-After, each repeat given as
    /// (goodput/s, refused/s, gateway CPU); the row at -c 1000 picks the repeat of 100/s, which
    /// refused 40/s, while its repeats' median refusals are 30/s.
    fn pool_rows(repeats: usize) -> Vec<Vec<FloodRow>> {
        let plant = |(goodput_per_s, refused_per_s, gateway_cpu): (f64, f64, f64)| FloodPlant {
            goodput_per_s,
            refused_per_s,
            health_p99_ms: 1.0,
            gateway_cpu,
        };
        let row = |c: u32, honour: bool, figures: [(f64, f64, f64); 3]| -> Vec<FloodRow> {
            figures[..repeats]
                .iter()
                .map(|f| plant(*f).row("pool", c, honour))
                .collect()
        };
        vec![
            row(
                100,
                false,
                [(50.0, 0.0, 0.3), (52.0, 0.0, 0.3), (48.0, 0.0, 0.3)],
            ),
            row(
                1000,
                false,
                [(100.0, 40.0, 0.4), (90.0, 30.0, 0.5), (110.0, 20.0, 0.6)],
            ),
            row(
                1000,
                true,
                [(120.0, 10.0, 0.4), (120.0, 10.0, 0.4), (120.0, 10.0, 0.4)],
            ),
        ]
    }

    #[test]
    fn the_reading_quotes_the_medians_of_the_repeats_and_says_so_once() {
        let f = planted::flood(&[100, 1000], 3, pool_rows(3));
        assert_eq!(
            f.reading[0],
            "Each figure below is the median of 3 repeats of its row."
        );
        assert_eq!(
            f.reading.iter().filter(|l| l.contains("median")).count(),
            1,
            "{:#?}",
            f.reading
        );
        // The medians (100/s, 30 refusals/s, 50% CPU), not the figures of the repeat shown
        // (100/s, 40 refusals/s, 40% CPU).
        assert!(
            f.reading[1].starts_with(
                "pool: at -c 1000 goodput was 100.0/s (2.00x its 50.0/s at -c 100), with 30 refusals/s; its gateway used 50% of the machine"
            ),
            "{:#?}",
            f.reading
        );
        assert!(
            f.reading[2].starts_with(
                "pool at -c 1000 with a client that honours Retry-After: 10 refusals/s instead of 30, goodput 120.0/s instead of 100.0/s;"
            ),
            "{:#?}",
            f.reading
        );
        // One repeat only: the figures of the one run, and no word of a median.
        let once = planted::flood(&[100, 1000], 1, pool_rows(1));
        assert_eq!(once.reading.len(), 2, "{:#?}", once.reading);
        assert!(
            once.reading[0].starts_with(
                "pool: at -c 1000 goodput was 100.0/s (2.00x its 50.0/s at -c 100), with 40 refusals/s; its gateway used 40% of the machine"
            ),
            "{:#?}",
            once.reading
        );
    }
}
