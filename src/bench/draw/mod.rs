//! The bench's drawings: each reads the model (`super::model`) and nothing that runs.
//!
//! # Layout
//! - `text`: the uniform scenario's table on the terminal (also in README.md);
//! - `reading`, `limit`, `verdict` (with its thresholds in `rules`): the sentences that read
//!   the tables, and the verdict;
//! - `mix`, `flood`, `node`: those scenarios' tables and readings;
//! - `html`, `chart`, `style`: the self-contained HTML page, its SVG charts, and their
//!   colours and measure of text;
//! - `markdown`, `csv`: the report folder's `README.md` and `timeline.csv`;
//! - `folder`: the report folder (`results.json`, `timeline.csv`, `README.md`, `index.html`);
//! - `compare`: `--compare A B` over two report folders, and the repeats' lines;
//! - `units`: `esc`, `ms` and `mib`, shared by all.

pub mod chart;
pub mod compare;
pub mod csv;
pub mod flood;
pub mod flood_reading;
pub mod folder;
pub mod html;
pub mod limit;
pub mod markdown;
pub mod mix;
pub mod node;
pub mod reading;
pub mod rules;
pub mod style;
pub mod text;
pub mod units;
pub mod verdict;
