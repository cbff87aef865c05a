//! The one way the report writes its units and escapes its text, for every drawing: the
//! terminal and Markdown tables, the sentences of the reading, the HTML page.

/// Milliseconds for a table cell: `0.41ms`, `37ms`, `1.25s`.
pub(crate) fn ms(v: f64) -> String {
    ms_with(v, "")
}

/// Milliseconds in a sentence: `0.41 ms`, `37 ms`, `1.25 s`.
pub(crate) fn ms_words(v: f64) -> String {
    ms_with(v, " ")
}

fn ms_with(v: f64, gap: &str) -> String {
    if v >= 1000.0 {
        format!("{:.2}{gap}s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}{gap}ms")
    } else {
        format!("{v:.2}{gap}ms")
    }
}

/// Bytes as MiB (the model's, which keeps some figures in MiB).
pub(crate) use crate::bench::model::mib;

/// Text made safe for HTML, in an element or an attribute.
pub(crate) fn esc<S: AsRef<str> + ?Sized>(s: &S) -> String {
    s.as_ref()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_the_same_everywhere() {
        assert_eq!(ms(0.413), "0.41ms");
        assert_eq!(ms_words(37.2), "37 ms");
        assert_eq!(ms(1250.0), "1.25s");
        assert_eq!(mib(3 << 20), 3.0);
        assert_eq!(
            esc(r#"<a href="x">&</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
