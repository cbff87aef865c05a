//! The report folder: `results.json`, `timeline.csv`, a `README.md` summary and the HTML page,
//! written from the [`Results`].

use std::path::Path;

use super::csv::timeline_csv;
use super::markdown::markdown;
use crate::bench::model::Results;

/// Writes results.json, timeline.csv, README.md and index.html into `dir`.
///
/// # Errors
/// Any I/O error.
pub fn write(dir: &Path, r: &Results) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), json + "\n")?;
    std::fs::write(dir.join("timeline.csv"), timeline_csv(r))?;
    std::fs::write(dir.join("README.md"), markdown(r))?;
    std::fs::write(dir.join("index.html"), super::html::page(r))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::bench::planted::{Plant, answers, results};
    use crate::load::Planted;

    /// A row where most requests never finished (as `node:worker` did) shows them in every
    /// output, beside its errors, timeouts and non-2xx answers.
    #[test]
    fn a_planted_run_with_unfinished_requests_shows_them_everywhere() {
        let stuck = Planted {
            answers: answers(5, 200, 4000.0),
            unfinished: 95,
            cut_after: std::time::Duration::from_secs(6),
            ..Planted::default()
        };
        let r = results(vec![
            Plant::new("pool", 100.0, 1.0),
            Plant::new("spawn", 0.5, 2.0).heavy(stuck),
        ]);
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path(), &r).unwrap();
        let file = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();

        let table = super::super::text::table(&r);
        let row = table.lines().find(|l| l.starts_with("spawn")).unwrap();
        assert!(row.contains(" 0/0/0/95 "), "{table}");
        assert!(table.contains("err/timeout/!2xx/unfinished"), "{table}");
        assert!(table.contains(super::super::text::LATENCY_NOTE), "{table}");
        let said = "spawn: 95 of its 100 /heavy requests were still waiting for their answer when the window closed; its p50/p99/max cover the 5 answered.";
        assert!(r.reading.iter().any(|l| l == said), "{:#?}", r.reading);

        let readme = file("README.md");
        assert!(readme.contains(row), "{readme}");
        assert!(readme.contains(said), "{readme}");

        let html = file("index.html");
        assert!(
            html.contains("<th>err/timeout/!2xx/unfinished</th>"),
            "{html}"
        );
        assert!(html.contains("<td>0/0/0/95</td>"), "{html}");
        assert!(html.contains(&super::super::units::esc(said)), "{html}");

        let json: serde_json::Value = serde_json::from_str(&file("results.json")).unwrap();
        let spawn = &json["runs"][1];
        assert_eq!(spawn["strategy"], "spawn");
        assert_eq!(spawn["unfinished"], 95);
        assert_eq!(spawn["heavy"]["requests"]["completed"], 5);
        assert_eq!(json["schema_version"], crate::bench::model::SCHEMA_VERSION);

        // The CSV's columns add up to every request sent: the unfinished on the last second.
        let csv = file("timeline.csv");
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let rows: Vec<Vec<&str>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|c| c[0] == "spawn")
            .collect();
        let sum = |name: &str| -> u64 {
            rows.iter()
                .map(|c| c[col(name)].parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(
            sum("completed") + sum("timeouts") + sum("errors") + sum("unfinished"),
            100
        );
        assert_eq!(rows.last().unwrap()[col("unfinished")], "95");
    }
}
