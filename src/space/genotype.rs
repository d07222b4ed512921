//! Genotypes: discrete architectures of a space, their versioned RON form, and parsers for
//! the two published notations (DARTS `Genotype(normal=[...], ...)` lists and NAS-Bench-201
//! `|op~0|+|op~0|op~1|` strings).
//!
//! A genotype names, for every cell type in use, the `(op, input state)` pairs feeding each
//! of its nodes, and for a chain network the op of every searchable layer. [`Genotype::resolve`]
//! checks it against a compiled [`Space`] once; the result, [`Architecture`], is what counting
//! and network building use.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::{Candidate, LayerKind, Rule, Space};
use crate::spec::{OrderedMap, Source, Span, Spanned};

/// The genotype file format version written by this build.
pub const VERSION: u32 = 1;

/// The published DARTS genotypes (the DARTS reference code's genotypes.py).
pub const PUBLISHED: &[(&str, &str)] = &[
    (
        "DARTS_V1",
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
    ),
    (
        "DARTS_V2",
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
    ),
];

/// One `(op, input state)` pair feeding a node.
pub type Pair = Spanned<(String, u32)>;

/// A cell's choice: per intermediate node, the pairs summed there.
pub type CellChoice = Spanned<Vec<Vec<Pair>>>;

/// A discrete architecture, as stored in `genotype.ron`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genotype {
    /// Format version ([`VERSION`]).
    pub version: Spanned<u32>,
    /// The space it was derived in (informational).
    pub space: String,
    /// Per cell type: per intermediate node, the `(op, input state)` pairs summed there.
    #[serde(default)]
    pub cells: OrderedMap<Spanned<String>, CellChoice>,
    /// Per searchable layer of a chain network, in order: the chosen op.
    #[serde(default)]
    pub layers: Spanned<Vec<Spanned<String>>>,
}

/// A genotype checked against a space: indices instead of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    /// Per cell type (space order): the chosen `(edge index, candidate)` pairs, or `None`
    /// for a motif no edge picks.
    pub cells: Vec<Option<Vec<(usize, Candidate)>>>,
    /// Per slot: the chosen candidate.
    pub slots: Vec<Candidate>,
}

impl Genotype {
    /// Reads a genotype given on the command line: a genotype file, a published name
    /// (`DARTS_V2`), a DARTS `Genotype(normal=[...], ...)` string, or an NAS-Bench-201 string.
    pub fn from_arg(arg: &str, space: &Space) -> Result<(Source, Genotype)> {
        if let Some((_, text)) = PUBLISHED.iter().find(|(n, _)| *n == arg) {
            let src = Source::from_text(Path::new(arg), text.to_string());
            let g = Genotype::from_darts(&src, space)?;
            return Ok((src, g));
        }
        let src = Source::from_text(Path::new("--genotype"), arg.to_string());
        let t = arg.trim_start();
        if t.starts_with('|') {
            let g = Genotype::from_nb201(&src, space)?;
            return Ok((src, g));
        }
        if t.starts_with("Genotype(normal") || t.starts_with("Genotype( normal") {
            let g = Genotype::from_darts(&src, space)?;
            return Ok((src, g));
        }
        let path = Path::new(arg);
        if path.exists() {
            let src = Source::read(path)?;
            let g: Genotype = src.parse()?;
            return Ok((src, g));
        }
        let names: Vec<&str> = PUBLISHED.iter().map(|(n, _)| *n).collect();
        Err(Error::Input(format!(
            "--genotype {arg:?}: no such file, and not a published name ({}), a DARTS `Genotype(normal=[...], ...)` string or a NAS-Bench-201 `|op~0|+...` string",
            names.join(", ")
        )))
    }

    /// Parses an NAS-Bench-201 architecture string into a genotype of `space`'s one cell type.
    pub fn from_nb201(src: &Source, space: &Space) -> Result<Genotype> {
        let text = &src.text;
        let cell = single_cell(space).ok_or_else(|| {
            Error::from(src.diag(
                Span::default(),
                format!(
                    "an NAS-Bench-201 string needs a space with one cell type; \"{}\" has {}",
                    space.name,
                    space.skeleton_cells.len()
                ),
            ))
        })?;
        let lead = text.len() - text.trim_start().len();
        let body = text.trim();
        let mut nodes = Vec::new();
        let mut at = lead;
        for group in body.split('+') {
            let g_start = at;
            at += group.len() + 1;
            let inner = group
                .strip_prefix('|')
                .and_then(|g| g.strip_suffix('|'))
                .ok_or_else(|| {
                    Error::from(src.diag(
                        Span {
                            file: 0,
                            start: g_start,
                            end: g_start + group.len(),
                        },
                        "expected a group `|op~j|...|` between `+` signs",
                    ))
                })?;
            let mut pairs = Vec::new();
            let mut p = g_start + 1;
            for item in inner.split('|') {
                let span = Span {
                    file: 0,
                    start: p,
                    end: p + item.len(),
                };
                p += item.len() + 1;
                let (op, j) = item.split_once('~').ok_or_else(|| {
                    Error::from(src.diag(span, format!("expected `op~input`, found {item:?}")))
                })?;
                let j: u32 = j.parse().map_err(|_| {
                    Error::from(src.diag(span, format!("the input in {item:?} is not a number")))
                })?;
                pairs.push(Spanned {
                    value: (op.to_string(), j),
                    span,
                });
            }
            nodes.push(pairs);
        }
        Ok(Genotype {
            version: Spanned::unspanned(VERSION),
            space: space.name.clone(),
            cells: OrderedMap(vec![(
                Spanned::unspanned(space.cells[cell].name.clone()),
                Spanned {
                    value: nodes,
                    span: Span {
                        file: 0,
                        start: lead,
                        end: text.len(),
                    },
                },
            )]),
            layers: Spanned::unspanned(Vec::new()),
        })
    }

    /// Parses a DARTS genotype (the Python repr of `genotypes.Genotype`) for a `Stacked` space:
    /// `normal` feeds the network's normal cell, `reduce` its reduction cell, pairs 2i and
    /// 2i+1 feed node i. The concat lists must match the cells' outputs.
    pub fn from_darts(src: &Source, space: &Space) -> Result<Genotype> {
        let mut p = PyParser { src, pos: 0 };
        let (normal, reduce) = stacked_cells(space).ok_or_else(|| {
            Error::from(src.diag(Span::default(), format!("a DARTS genotype needs a Stacked space with normal and reduction cells; \"{}\" is not one", space.name)))
        })?;
        p.expect_word("Genotype")?;
        p.eat('(')?;
        let mut cells = Vec::new();
        loop {
            p.skip_ws();
            if p.peek() == Some(')') {
                p.pos += 1;
                break;
            }
            let key_at = p.pos;
            let key = p.word();
            p.eat('=')?;
            match key.as_str() {
                "normal" | "reduce" => {
                    let pairs = p.pairs()?;
                    let cell = if key == "normal" { normal } else { reduce };
                    let n = space.cells[cell].nodes;
                    if pairs.len() != 2 * n {
                        return Err(src.diag(Span { file: 0, start: key_at, end: p.pos }, format!("`{key}` has {} pairs; cell \"{}\" has {n} nodes, so it needs {}", pairs.len(), space.cells[cell].name, 2 * n)).into());
                    }
                    let nodes = pairs.chunks(2).map(|c| c.to_vec()).collect();
                    cells.push((Spanned { value: space.cells[cell].name.clone(), span: Span { file: 0, start: key_at, end: key_at + key.len() } }, Spanned { value: nodes, span: Span { file: 0, start: key_at, end: p.pos } }));
                }
                "normal_concat" | "reduce_concat" => {
                    let list_at = p.pos;
                    let concat = p.concat()?;
                    let cell = if key == "normal_concat" { normal } else { reduce };
                    let want: Vec<u32> = space.cells[cell].output_states().iter().map(|&s| s as u32).collect();
                    if concat != want {
                        return Err(src.diag(Span { file: 0, start: list_at, end: p.pos }, format!("`{key}` is {concat:?}, but cell \"{}\" outputs states {want:?}", space.cells[cell].name)).into());
                    }
                }
                _ => return Err(src.diag(Span { file: 0, start: key_at, end: key_at + key.len().max(1) }, format!("unexpected field {key:?}; expected normal, normal_concat, reduce or reduce_concat")).into()),
            }
            p.skip_ws();
            if p.peek() == Some(',') {
                p.pos += 1;
            }
        }
        p.skip_ws();
        if p.pos < src.text.len() {
            return Err(src
                .diag(
                    Span {
                        file: 0,
                        start: p.pos,
                        end: src.text.len(),
                    },
                    "unexpected text after the genotype",
                )
                .into());
        }
        Ok(Genotype {
            version: Spanned::unspanned(VERSION),
            space: space.name.clone(),
            cells: OrderedMap(cells),
            layers: Spanned::unspanned(Vec::new()),
        })
    }

    /// Checks the genotype against `space` and resolves names to indices. Errors point into
    /// `src`, the genotype's source.
    pub fn resolve(&self, src: &Source, space: &Space) -> Result<Architecture> {
        if self.version.value != VERSION {
            return Err(src
                .diag(
                    self.version.span,
                    format!(
                        "genotype version {} is not supported (this build reads version {VERSION})",
                        self.version.value
                    ),
                )
                .into());
        }
        let mut cells: Vec<Option<Vec<(usize, Candidate)>>> = vec![None; space.cells.len()];
        for (k, (name, nodes)) in self.cells.0.iter().enumerate() {
            if self.cells.0[..k].iter().any(|(n, _)| n.value == name.value) {
                return Err(src
                    .diag(name.span, format!("cell \"{}\" is given twice", name.value))
                    .into());
            }
            let ci = space
                .cells
                .iter()
                .position(|c| c.name == name.value)
                .ok_or_else(|| {
                    let known: Vec<&str> = space.cells.iter().map(|c| c.name.as_str()).collect();
                    Error::from(
                        src.diag(
                            name.span,
                            format!("space \"{}\" has no cell \"{}\"", space.name, name.value),
                        )
                        .with_help(format!("its cells: {}", known.join(", "))),
                    )
                })?;
            let cell = &space.cells[ci];
            let whose = format!("cell \"{}\"", cell.name);
            if nodes.len() != cell.nodes {
                return Err(src
                    .diag(
                        nodes.span,
                        format!(
                            "{whose} has {} nodes, the genotype gives {}",
                            cell.nodes,
                            nodes.len()
                        ),
                    )
                    .into());
            }
            let mut chosen = Vec::new();
            for (i, pairs) in nodes.iter().enumerate() {
                let node = cell.inputs + i;
                let mut inputs_seen = Vec::new();
                for pair in pairs {
                    let (op, from) = (&pair.value.0, pair.value.1 as usize);
                    let at = if pair.span == Span::default() {
                        nodes.span
                    } else {
                        pair.span
                    };
                    let e = cell.incoming(node).find(|&e| cell.edges[e].from == from).ok_or_else(|| {
                        let froms: Vec<String> = cell.incoming(node).map(|e| cell.edges[e].from.to_string()).collect();
                        Error::from(src.diag(at, format!("{whose}, node {node}: no edge from state {from} (its inputs: {})", froms.join(", "))))
                    })?;
                    if inputs_seen.contains(&from) {
                        return Err(src
                            .diag(
                                at,
                                format!("{whose}, node {node}: input {from} is used twice"),
                            )
                            .into());
                    }
                    inputs_seen.push(from);
                    let c = space
                        .find_candidate(op)
                        .filter(|c| cell.allowed().any(|a| a == *c))
                        .ok_or_else(|| {
                            let allowed: Vec<&str> =
                                cell.allowed().map(|c| space.candidate_name(c)).collect();
                            Error::from(
                                src.diag(
                                    at,
                                    format!(
                                        "{whose}, node {node}: \"{op}\" is not a candidate here"
                                    ),
                                )
                                .with_help(format!("candidates: {}", allowed.join(", "))),
                            )
                        })?;
                    chosen.push((e, c));
                }
                let need = match cell.rule {
                    Rule::TopK { per_node, .. } => per_node,
                    Rule::ArgmaxPerEdge => cell.incoming(node).count(),
                };
                if inputs_seen.len() != need {
                    let rule = match cell.rule {
                        Rule::TopK { .. } => "TopK keeps",
                        Rule::ArgmaxPerEdge => "ArgmaxPerEdge chooses an op on each of its",
                    };
                    return Err(src.diag(nodes.span, format!("{whose}, node {node}: {} given, but the space's {rule} {need} edges", inputs_seen.len())).into());
                }
            }
            chosen.sort();
            cells[ci] = Some(chosen);
        }
        // Every cell in use needs a choice: the skeleton's cells and every motif some
        // chosen edge picks.
        let mut needed: Vec<usize> = space.skeleton_cells.clone();
        let mut slots = Vec::new();
        if self.layers.len() != space.slots.len() {
            return Err(src
                .diag(
                    self.layers.span,
                    format!(
                        "the space has {} searchable layers, the genotype gives {}",
                        space.slots.len(),
                        self.layers.len()
                    ),
                )
                .into());
        }
        for (i, name) in self.layers.iter().enumerate() {
            let slot = &space.slots[i];
            let c = space
                .find_candidate(name)
                .filter(|c| slot.candidates.contains(c))
                .ok_or_else(|| {
                    let allowed: Vec<&str> = slot
                        .candidates
                        .iter()
                        .map(|&c| space.candidate_name(c))
                        .collect();
                    Error::from(
                        src.diag(
                            name.span,
                            format!("layer {i}: \"{}\" is not a candidate there", name.value),
                        )
                        .with_help(format!("candidates: {}", allowed.join(", "))),
                    )
                })?;
            slots.push(c);
        }
        needed.extend(slots.iter().filter_map(|c| match c {
            Candidate::Cell(m) => Some(*m),
            _ => None,
        }));
        let mut k = 0;
        while k < needed.len() {
            let ci = needed[k];
            k += 1;
            let Some(chosen) = &cells[ci] else {
                return Err(src
                    .diag(
                        self.cells
                            .0
                            .first()
                            .map_or(Span::default(), |(n, _)| n.span),
                        format!(
                            "the genotype has no choice for cell \"{}\"",
                            space.cells[ci].name
                        ),
                    )
                    .into());
            };
            for (_, c) in chosen {
                if let Candidate::Cell(m) = c
                    && !needed.contains(m)
                {
                    needed.push(*m);
                }
            }
        }
        for (ci, c) in cells.iter_mut().enumerate() {
            if !needed.contains(&ci) && c.is_some() {
                *c = None;
            }
        }
        Ok(Architecture { cells, slots })
    }

    /// The genotype as RON text, ready to write to `genotype.ron`.
    pub fn to_ron(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Genotype(\n    version: {},\n    space: {:?},\n    cells: {{",
            self.version.value, self.space
        );
        for (name, nodes) in &self.cells.0 {
            let _ = writeln!(out, "        {:?}: [", name.value);
            for pairs in nodes.iter() {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|p| format!("({:?}, {})", p.0, p.1))
                    .collect();
                let _ = writeln!(out, "            [{}],", items.join(", "));
            }
            let _ = writeln!(out, "        ],");
        }
        let _ = writeln!(out, "    }},");
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{:?}", l.value))
            .collect();
        let _ = writeln!(out, "    layers: [{}],\n)", layers.join(", "));
        out
    }
}

/// The one skeleton cell type of a space, if it has exactly one.
/// The NAS-Bench-201 string (`|op~0|+|op~0|op~1|+|...|`) of `g`, for a space of one cell
/// type with one input whose rule keeps every edge and no searchable layers; `None` for
/// other spaces or a genotype that does not name that cell.
pub fn nb201_string(space: &Space, g: &Genotype) -> Option<String> {
    let ci = single_cell(space)?;
    let cell = &space.cells[ci];
    if cell.inputs != 1 || cell.rule != Rule::ArgmaxPerEdge || !space.slots.is_empty() {
        return None;
    }
    let (_, nodes) = g.cells.0.iter().find(|(n, _)| n.value == cell.name)?;
    let groups: Vec<String> = nodes
        .value
        .iter()
        .map(|pairs| {
            let mut pairs: Vec<&(String, u32)> = pairs.iter().map(|p| &p.value).collect();
            pairs.sort_by_key(|p| p.1);
            let items: String = pairs.iter().map(|(op, j)| format!("|{op}~{j}")).collect();
            format!("{items}|")
        })
        .collect();
    Some(groups.join("+"))
}

fn single_cell(space: &Space) -> Option<usize> {
    match space.skeleton_cells.as_slice() {
        [c] => Some(*c),
        _ => None,
    }
}

/// The normal and reduction cell types of a `Stacked` space.
fn stacked_cells(space: &Space) -> Option<(usize, usize)> {
    let mut normal = None;
    let mut reduce = None;
    for (_, l) in space.cell_layers() {
        if let LayerKind::Cell { cell, .. } = l.kind {
            if space.cells[cell].reduction {
                reduce.get_or_insert(cell);
            } else {
                normal.get_or_insert(cell);
            }
        }
    }
    let has_pre = space
        .cell_layers()
        .any(|(_, l)| matches!(&l.kind, LayerKind::Cell { pre, .. } if pre.len() == 2));
    match (normal, reduce) {
        (Some(n), Some(r)) if has_pre => Some((n, r)),
        _ => None,
    }
}

/// A tiny reader for the Python repr of a DARTS genotype.
struct PyParser<'a> {
    src: &'a Source,
    pos: usize,
}

impl PyParser<'_> {
    fn rest(&self) -> &str {
        &self.src.text[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn error(&self, msg: String) -> Error {
        let end = self.pos + self.peek().map_or(0, char::len_utf8);
        self.src
            .diag(
                Span {
                    file: 0,
                    start: self.pos,
                    end,
                },
                msg,
            )
            .into()
    }
    fn eat(&mut self, c: char) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            let found = self
                .peek()
                .map_or("the end".to_string(), |f| format!("{f:?}"));
            Err(self.error(format!("expected {c:?}, found {found}")))
        }
    }
    fn word(&mut self) -> String {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        let w = r[..n].to_string();
        self.pos += n;
        w
    }
    fn expect_word(&mut self, w: &str) -> Result<()> {
        let at = self.pos;
        if self.word() == w {
            Ok(())
        } else {
            self.pos = at;
            Err(self.error(format!("expected `{w}`")))
        }
    }
    fn number(&mut self) -> Result<u32> {
        self.skip_ws();
        let r = self.rest();
        let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        let v = r[..n].parse::<u32>().ok();
        let v = v.ok_or_else(|| self.error("expected a number".into()))?;
        self.pos += n;
        Ok(v)
    }
    fn string(&mut self) -> Result<String> {
        self.skip_ws();
        let q = self
            .peek()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| self.error("expected a quoted op name".into()))?;
        self.pos += 1;
        let r = self.rest();
        let n = r.find(q);
        let n = n.ok_or_else(|| self.error("unterminated string".into()))?;
        let s = self.rest()[..n].to_string();
        self.pos += n + 1;
        Ok(s)
    }
    fn pairs(&mut self) -> Result<Vec<Pair>> {
        self.eat('[')?;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok(out);
            }
            let start = self.pos;
            self.eat('(')?;
            let op = self.string()?;
            self.eat(',')?;
            let j = self.number()?;
            self.eat(')')?;
            out.push(Spanned {
                value: (op, j),
                span: Span {
                    file: 0,
                    start,
                    end: self.pos,
                },
            });
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            }
        }
    }
    fn concat(&mut self) -> Result<Vec<u32>> {
        self.skip_ws();
        if self.rest().starts_with("range") {
            self.expect_word("range")?;
            self.eat('(')?;
            let a = self.number()?;
            self.eat(',')?;
            let b = self.number()?;
            self.eat(')')?;
            return Ok((a..b).collect());
        }
        self.eat('[')?;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok(out);
            }
            out.push(self.number()?);
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            }
        }
    }
}

/// Reads a genotype off architecture weights with each cell's derivation rule
/// (the DARTS reference code's genotypes.py):
///
/// - `TopK`: each node ranks its incoming edges by their largest weight over candidates
///   outside `exclude` and keeps the strongest `per_node` (ties: lower input state first);
///   each kept edge takes that argmax (ties: the earlier candidate). Pairs are listed
///   strongest first.
/// - `ArgmaxPerEdge`: every edge takes its argmax over all candidates (ties: earlier).
///
/// `cell_weights[c]` is cell `c`'s [edges][candidates] weights (softmax of α), `None` for
/// cells not in use; `slot_weights[i]` the searchable layer's. Motifs get a choice only when
/// the architecture uses them.
pub fn derive(
    space: &Space,
    cell_weights: &[Option<Vec<Vec<f32>>>],
    slot_weights: &[Vec<f32>],
) -> Genotype {
    fn argmax(w: &[f32], allowed: impl Fn(usize) -> bool) -> Option<(usize, f32)> {
        let mut best: Option<(usize, f32)> = None;
        for (k, &v) in w.iter().enumerate() {
            if allowed(k) && best.is_none_or(|(_, b)| v > b) {
                best = Some((k, v));
            }
        }
        best
    }
    let mut cells: Vec<(Spanned<String>, CellChoice)> = Vec::new();
    let mut needed: Vec<usize> = space.skeleton_cells.clone();
    let layers: Vec<Spanned<String>> = space
        .slots
        .iter()
        .zip(slot_weights)
        .map(|(slot, w)| {
            let (k, _) = argmax(w, |_| true).unwrap_or((0, 0.0));
            if let Candidate::Cell(m) = slot.candidates[k] {
                needed.push(m);
            }
            Spanned::unspanned(space.candidate_name(slot.candidates[k]).to_string())
        })
        .collect();
    let mut i = 0;
    while i < needed.len() {
        let ci = needed[i];
        i += 1;
        let cell = &space.cells[ci];
        let Some(Some(w)) = cell_weights.get(ci) else {
            continue;
        };
        let mut nodes = Vec::new();
        for node in cell.inputs..cell.states() {
            let incoming: Vec<usize> = cell.incoming(node).collect();
            let mut picks: Vec<(usize, usize, f32)> = match &cell.rule {
                Rule::ArgmaxPerEdge => incoming
                    .iter()
                    .filter_map(|&e| argmax(&w[e], |_| true).map(|(k, v)| (e, k, v)))
                    .collect(),
                Rule::TopK { per_node, exclude } => {
                    let allowed = |k: usize| !matches!(cell.candidates[k], Candidate::Op(o) if exclude.contains(&o));
                    let mut ranked: Vec<(usize, usize, f32)> = incoming
                        .iter()
                        .filter_map(|&e| argmax(&w[e], allowed).map(|(k, v)| (e, k, v)))
                        .collect();
                    // Strongest first; ties keep the lower input state (edges are ordered by source).
                    ranked.sort_by(|a, b| {
                        b.2.total_cmp(&a.2)
                            .then(cell.edges[a.0].from.cmp(&cell.edges[b.0].from))
                    });
                    ranked.truncate(*per_node);
                    ranked
                }
            };
            if matches!(cell.rule, Rule::ArgmaxPerEdge) {
                picks.sort_by_key(|p| cell.edges[p.0].from);
            }
            let pairs = picks
                .iter()
                .map(|&(e, k, _)| {
                    let c = cell.candidates[k];
                    if let Candidate::Cell(m) = c
                        && !needed.contains(&m)
                    {
                        needed.push(m);
                    }
                    Spanned::unspanned((
                        space.candidate_name(c).to_string(),
                        cell.edges[e].from as u32,
                    ))
                })
                .collect();
            nodes.push(pairs);
        }
        cells.push((
            Spanned::unspanned(cell.name.clone()),
            Spanned::unspanned(nodes),
        ));
    }
    Genotype {
        version: Spanned::unspanned(VERSION),
        space: space.name.clone(),
        cells: OrderedMap(cells),
        layers: Spanned::unspanned(layers),
    }
}
