//! Stable text and Graphviz DOT renderings of a compiled space, and of one architecture in
//! it. The text forms are golden-tested: change them deliberately.

use std::fmt::Write as _;

use super::{Candidate, LayerKind, Pre, Rule, Space};
use crate::space::genotype::Architecture;
use crate::spec::space::Output;

/// Thousands separators: 1930618 → "1,930,618".
pub fn thousands(n: u64) -> String {
    if n == u64::MAX {
        return "more than 1.8e19 (overflow)".into();
    }
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A big count in full when short, else in scientific form with the digit count.
pub fn big(n: &num_bigint::BigUint) -> String {
    let s = n.to_string();
    if s.len() <= 15 {
        thousands(s.parse().unwrap_or(0))
    } else {
        format!("{}.{}e{} (exact: {s})", &s[..1], &s[1..4], s.len() - 1)
    }
}

fn rule(r: &Rule, space: &Space) -> String {
    match r {
        Rule::ArgmaxPerEdge => "ArgmaxPerEdge".into(),
        Rule::TopK { per_node, exclude } => {
            let ex: Vec<&str> = exclude.iter().map(|&o| space.ops[o].0.as_str()).collect();
            format!("TopK(per_node: {per_node}, exclude: [{}])", ex.join(", "))
        }
    }
}

fn names(space: &Space, cands: &[Candidate]) -> String {
    cands
        .iter()
        .map(|&c| space.candidate_name(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn layer_name(space: &Space, kind: &LayerKind) -> String {
    match kind {
        LayerKind::ConvBn {
            kernel,
            stride,
            act,
        } => format!(
            "ConvBn {kernel}x{kernel} stride {stride}{}",
            match act {
                crate::spec::space::Act::None => "",
                crate::spec::space::Act::Relu => " + ReLU",
                crate::spec::space::Act::Relu6 => " + ReLU6",
            }
        ),
        LayerKind::Cell {
            cell,
            width,
            stride,
            pre,
        } => {
            let pre: Vec<&str> = pre
                .iter()
                .map(|p| match p {
                    Pre::None => "-",
                    Pre::ReluConvBn => "relu-conv1x1-bn",
                    Pre::FactorizedReduce => "factorized-reduce",
                })
                .collect();
            let pre = if pre.iter().all(|p| *p == "-") {
                String::new()
            } else {
                format!(", pre [{}]", pre.join(", "))
            };
            format!(
                "cell \"{}\" width {width} stride {stride}{pre}",
                space.cells[*cell].name
            )
        }
        LayerKind::Choice { slot, stride } => format!(
            "choice {slot} stride {stride} of [{}]",
            names(space, &space.slots[*slot].candidates)
        ),
        LayerKind::Residual { stride } => format!("ResidualBlock stride {stride}"),
        LayerKind::BnRelu => "BnRelu".into(),
        LayerKind::Head => "GlobalPoolLinear".into(),
    }
}

/// What a layer is; with an architecture, a searchable layer names its choice.
fn layer_label(space: &Space, arch: Option<&Architecture>, kind: &LayerKind) -> String {
    match (arch, kind) {
        (Some(a), LayerKind::Choice { slot, .. }) => {
            format!("layer {slot}: {}", space.candidate_name(a.slots[*slot]))
        }
        _ => layer_name(space, kind),
    }
}

/// The skeleton as table rows: index, [`layer_label`], sources, output shape, then the
/// columns `extra` gives for the layer's index.
fn network_rows(
    space: &Space,
    arch: Option<&Architecture>,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Vec<String>> {
    let rows = space.network.layers.iter().enumerate().map(|(k, l)| {
        let mut row = vec![
            k.to_string(),
            layer_label(space, arch, &l.kind),
            format!("<- {}", sources(&l.inputs)),
            format!("-> {}", l.output),
        ];
        row.extend(extra(k));
        row
    });
    rows.collect()
}

fn sources(inputs: &[usize]) -> String {
    if inputs.is_empty() {
        "image".into()
    } else {
        inputs
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Rows as aligned columns, indented by two; the first and last columns right-aligned.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            line.push(' ');
            if c == 0 || (c + 1 == cols && cols > 4) {
                line += &" ".repeat(pad);
                line += cell;
            } else {
                line += cell;
                line += &" ".repeat(pad);
            }
        }
        o += line.trim_end();
        o.push('\n');
    }
    o
}

/// The `nas-pipe check` summary of a space.
pub fn summary(space: &Space) -> String {
    let mut o = String::new();
    let i = space.input;
    let _ = writeln!(o, "space \"{}\"", space.name);
    let _ = writeln!(
        o,
        "  input             {}x{}x{}, {} classes",
        i.channels, i.size, i.size, i.classes
    );
    let ops: Vec<&str> = space.ops.iter().map(|(n, _)| n.as_str()).collect();
    let _ = writeln!(o, "  ops               {}: {}", ops.len(), ops.join(", "));
    for (ci, c) in space.cells.iter().enumerate() {
        let role = if space.skeleton_cells.contains(&ci) {
            ""
        } else {
            ", motif"
        };
        let _ = writeln!(
            o,
            "  cell {:<12} {} inputs, {} nodes, {} edges x {} candidates, output {}{}{}",
            format!("\"{}\"", c.name),
            c.inputs,
            c.nodes,
            c.edges.len(),
            c.candidates.len(),
            match c.output {
                Output::Concat => "concat",
                Output::Last => "last",
            },
            if c.reduction { ", reduction" } else { "" },
            role
        );
    }
    let cells = space.cell_layers().count();
    let _ = writeln!(
        o,
        "  network           {} layers ({} cells, {} searchable layers)",
        space.network.layers.len(),
        cells,
        space.slots.len()
    );
    let _ = writeln!(o, "  architectures     {}", big(&space.architectures()));
    let s = space.supernet_cost();
    let _ = writeln!(
        o,
        "  weight sharing    {} params, {} MACs, {} architecture weights",
        thousands(s.params),
        thousands(s.macs),
        space.alphas()
    );
    let r = space.cost_range();
    let _ = writeln!(
        o,
        "  discrete params   {} to {}",
        thousands(r.min.params),
        thousands(r.max.params)
    );
    let _ = writeln!(
        o,
        "  discrete MACs     {} to {}",
        thousands(r.min.macs),
        thousands(r.max.macs)
    );
    o
}

/// The space as indented text: the skeleton, then each cell's DAG.
pub fn text(space: &Space) -> String {
    let mut o = String::new();
    let i = space.input;
    let _ = writeln!(
        o,
        "space \"{}\" (input {}x{}x{}, {} classes)",
        space.name, i.channels, i.size, i.size, i.classes
    );
    let _ = writeln!(o, "network");
    o += &table(&network_rows(space, None, |_| Vec::new()));
    for c in &space.cells {
        let _ = writeln!(
            o,
            "cell \"{}\": {} inputs, {} nodes, output {}{}, derive {}",
            c.name,
            c.inputs,
            c.nodes,
            match c.output {
                Output::Concat => "concat",
                Output::Last => "last",
            },
            if c.reduction { ", reduction" } else { "" },
            rule(&c.rule, space)
        );
        let _ = writeln!(o, "  candidates: {}", names(space, &c.candidates));
        for node in c.inputs..c.states() {
            let froms: Vec<String> = c
                .incoming(node)
                .map(|e| format!("{} (edge {e})", c.edges[e].from))
                .collect();
            let _ = writeln!(o, "  node {node} = sum of {}", froms.join(", "));
        }
        let outs: Vec<String> = c.output_states().iter().map(|s| s.to_string()).collect();
        let _ = writeln!(o, "  output = {}", outs.join(" ++ "));
    }
    o
}

/// One architecture as indented text.
pub fn text_arch(space: &Space, arch: &Architecture) -> String {
    let mut o = String::new();
    let net = space.build(arch);
    let i = space.input;
    let _ = writeln!(
        o,
        "architecture in space \"{}\" (input {}x{}x{}, {} classes)",
        space.name, i.channels, i.size, i.size, i.classes
    );
    let _ = writeln!(o, "network");
    let params = |k: usize| vec![format!("{} params", thousands(net.layers[k].cost.params))];
    o += &table(&network_rows(space, Some(arch), params));
    for (ci, chosen) in arch.cells.iter().enumerate() {
        let Some(chosen) = chosen else { continue };
        let c = &space.cells[ci];
        let _ = writeln!(o, "cell \"{}\"", c.name);
        for node in c.inputs..c.states() {
            let terms: Vec<String> = chosen
                .iter()
                .filter(|(e, _)| c.edges[*e].to == node)
                .map(|(e, cand)| format!("{}({})", space.candidate_name(*cand), c.edges[*e].from))
                .collect();
            let _ = writeln!(o, "  node {node} = {}", terms.join(" + "));
        }
        let outs: Vec<String> = c.output_states().iter().map(|s| s.to_string()).collect();
        let _ = writeln!(o, "  output = {}", outs.join(" ++ "));
    }
    let cost = net.cost();
    let _ = writeln!(
        o,
        "params {}, MACs {}",
        thousands(cost.params),
        thousands(cost.macs)
    );
    o
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT of the space (or of one architecture): the skeleton and one cluster per cell.
pub fn dot(space: &Space, arch: Option<&Architecture>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "digraph \"{}\" {{", dot_escape(&space.name));
    let _ = writeln!(
        o,
        "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(o, "  subgraph cluster_network {{\n    label=\"network\";");
    let _ = writeln!(
        o,
        "    image [label=\"image\\n{}x{}x{}\", shape=ellipse];",
        space.input.channels, space.input.size, space.input.size
    );
    for (k, l) in space.network.layers.iter().enumerate() {
        let label = layer_label(space, arch, &l.kind);
        let _ = writeln!(
            o,
            "    L{k} [label=\"{}\\n{}\"];",
            dot_escape(&label),
            l.output
        );
        if l.inputs.is_empty() {
            let _ = writeln!(o, "    image -> L{k};");
        }
        for i in &l.inputs {
            let _ = writeln!(o, "    L{i} -> L{k};");
        }
    }
    let _ = writeln!(o, "  }}");
    for ci in 0..space.cells.len() {
        let chosen = match arch {
            Some(a) => match &a.cells[ci] {
                Some(ch) => Some(ch.as_slice()),
                None => continue,
            },
            None => None,
        };
        let _ = writeln!(
            o,
            "  subgraph cluster_c{ci} {{\n    label=\"cell \\\"{}\\\"\";",
            dot_escape(&space.cells[ci].name)
        );
        cell_body(&mut o, space, ci, chosen, "    ");
        let _ = writeln!(o, "  }}");
    }
    let _ = writeln!(o, "}}");
    o
}

/// The statements drawing cell type `ci`, each line indented by `indent`: one graph node per
/// state (`c<ci>_<state>`: inputs as ellipses, intermediate nodes as boxes), `c<ci>_out`,
/// one edge per cell edge labelled with its op (`chosen`: only the edges an architecture
/// keeps) or its index (`None`: the whole space), and dashed edges from the output states.
fn cell_body(
    o: &mut String,
    space: &Space,
    ci: usize,
    chosen: Option<&[(usize, Candidate)]>,
    indent: &str,
) {
    let c = &space.cells[ci];
    let id = format!("c{ci}");
    for s in 0..c.states() {
        let (label, shape) = if s < c.inputs {
            (format!("in {s}"), "ellipse")
        } else {
            (format!("node {s}"), "box")
        };
        let _ = writeln!(o, "{indent}{id}_{s} [label=\"{label}\", shape={shape}];");
    }
    let _ = writeln!(o, "{indent}{id}_out [label=\"output\", shape=ellipse];");
    for (e, edge) in c.edges.iter().enumerate() {
        let label = match chosen {
            None => format!("edge {e}"),
            Some(ch) => match ch.iter().find(|(x, _)| *x == e) {
                Some((_, cand)) => space.candidate_name(*cand).to_string(),
                None => continue,
            },
        };
        let _ = writeln!(
            o,
            "{indent}{id}_{} -> {id}_{} [label=\"{}\"];",
            edge.from,
            edge.to,
            dot_escape(&label)
        );
    }
    for s in c.output_states() {
        let _ = writeln!(o, "{indent}{id}_{s} -> {id}_out [style=dashed];");
    }
}

/// Graphviz DOT of one cell type of an architecture, as a plain left-to-right digraph (no
/// clusters, which not every DOT renderer draws): its input states, intermediate nodes and
/// output, the kept edges labelled with their ops. `None` when `cell` is not a cell type
/// of the space or the architecture does not use it (a motif no edge picks).
pub fn cell_dot(space: &Space, arch: &Architecture, cell: usize) -> Option<String> {
    let chosen = arch.cells.get(cell)?.as_ref()?;
    let c = space.cells.get(cell)?;
    let mut o = String::new();
    let _ = writeln!(o, "digraph \"{}\" {{", dot_escape(&c.name));
    let _ = writeln!(
        o,
        "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=12];"
    );
    cell_body(&mut o, space, cell, Some(chosen), "  ");
    let _ = writeln!(o, "}}");
    Some(o)
}
