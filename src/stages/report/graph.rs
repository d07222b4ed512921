//! DOT graphs drawn as SVG with layout-rs, made fit to sit next to each other in one HTML
//! page: no XML prolog, every id (the arrow markers, edge paths, clip regions) and font
//! class prefixed so that no two drawings share one, the font classes in a fixed order
//! (layout-rs keeps them in a hash map), and a sans-serif font.

use layout::backends::svg::SVGWriter;
use layout::gv::{DotParser, GraphBuilder};

use crate::error::{Error, Result};

/// Lays out `dot` and returns its SVG, every id and class prefixed with `prefix` (letters,
/// digits and `-` only, unique within the page).
///
/// layout-rs panics on some inputs instead of returning an error; such a panic becomes an
/// error here, so that a drawing it cannot make never takes the report down.
pub fn svg(dot: &str, prefix: &str) -> Result<String> {
    let raw = std::panic::catch_unwind(|| {
        let mut parser = DotParser::new(dot);
        let ast = parser.process()?;
        let mut builder = GraphBuilder::new();
        builder.visit_graph(&ast);
        let mut graph = builder.get();
        let mut writer = SVGWriter::new();
        graph.do_it(false, false, false, &mut writer);
        Ok::<_, String>(writer.finalize())
    });
    match raw {
        Ok(Ok(svg)) => Ok(isolate(&svg, prefix)),
        Ok(Err(e)) => Err(Error::Input(format!("drawing a cell graph: {e}"))),
        Err(_) => Err(Error::Input(
            "drawing a cell graph: layout-rs failed on it".into(),
        )),
    }
}

/// `svg` without its XML prolog, with its ids and classes prefixed and its style lines
/// sorted.
fn isolate(svg: &str, prefix: &str) -> String {
    let body = match (svg.find("<?xml"), svg.find("?>")) {
        (Some(0), Some(end)) => &svg[end + 2..],
        _ => svg,
    };
    let mut s = body
        .replace("id=\"startarrow\"", &format!("id=\"{prefix}-startarrow\""))
        .replace("url(#startarrow)", &format!("url(#{prefix}-startarrow)"))
        .replace("id=\"endarrow\"", &format!("id=\"{prefix}-endarrow\""))
        .replace("url(#endarrow)", &format!("url(#{prefix}-endarrow)"))
        .replace("id=\"arrow", &format!("id=\"{prefix}-arrow"))
        .replace("href=\"#arrow", &format!("href=\"#{prefix}-arrow"))
        .replace("id=\"C", &format!("id=\"{prefix}-C"))
        .replace("url(#C", &format!("url(#{prefix}-C"))
        .replace("class=\"a", &format!("class=\"{prefix}-a"))
        .replace("font-family: Times, serif;", "font-family: sans-serif;");
    // The font classes: one `.aN { ... }` line each, in hash-map order.
    if let (Some(open), Some(close)) = (s.find("<style>\n"), s.find("</style>")) {
        let start = open + "<style>\n".len();
        if start <= close {
            let mut lines: Vec<String> = s[start..close]
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| match l.strip_prefix(".a") {
                    Some(rest) => format!(".{prefix}-a{rest}"),
                    None => l.to_string(),
                })
                .collect();
            lines.sort();
            let mut block = lines.join("\n");
            block.push('\n');
            s.replace_range(start..close, &block);
        }
    }
    // Scale down with the page; the drawing keeps its aspect ratio through its viewBox.
    s.replacen("<svg ", "<svg class=\"graph\" ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOT: &str = "digraph g {\n  rankdir=LR;\n  a [label=\"in 0\", shape=ellipse];\n  \
                       b [label=\"node 2\", shape=box];\n  o [label=\"output\", shape=ellipse];\n  \
                       a -> b [label=\"sep_conv_3x3\", fontsize=10];\n  b -> o [style=dashed];\n}\n";

    fn ids(svg: &str) -> Vec<String> {
        svg.split(" id=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    }

    #[test]
    fn drawings_share_no_id_and_have_no_prolog() {
        let a = svg(DOT, "g0").unwrap();
        let b = svg(DOT, "g1").unwrap();
        assert!(a.starts_with("<svg class=\"graph\" "), "{}", &a[..60]);
        assert!(!a.contains("<?xml"));
        let (ia, ib) = (ids(&a), ids(&b));
        assert!(ia.iter().any(|i| i == "g0-endarrow"), "{ia:?}");
        assert!(ia.iter().all(|i| i.starts_with("g0-")), "{ia:?}");
        assert!(ib.iter().all(|i| i.starts_with("g1-")), "{ib:?}");
        // Every reference points at an id of the same drawing.
        for r in a.split("url(#").skip(1) {
            let id = &r[..r.find(')').unwrap()];
            assert!(ia.iter().any(|i| i == id), "dangling url(#{id})");
        }
        for r in a.split("href=\"#").skip(1) {
            let id = &r[..r.find('"').unwrap()];
            assert!(ia.iter().any(|i| i == id), "dangling href #{id}");
        }
        assert!(a.contains("class=\"g0-a14\"") && a.contains(".g0-a14 {"));
        assert!(!a.contains("Times"));
    }

    #[test]
    fn drawings_are_deterministic() {
        // layout-rs keeps font classes in a hash map: the order must not leak out.
        let first = svg(DOT, "g").unwrap();
        for _ in 0..8 {
            assert_eq!(svg(DOT, "g").unwrap(), first);
        }
    }

    #[test]
    fn a_bad_graph_is_an_error() {
        assert!(svg("digraph { a -> ; }", "g").is_err());
    }
}
