//! Compiles a search-space file into checked petgraph DAGs.
//!
//! Owns: name resolution (ops, cells, motifs), the cell DAGs and their checks (cycles, nodes
//! with no input, states that reach no output, arity of the derivation rule), the network
//! skeleton (a DAG of layers), shape inference through every candidate of every edge, and
//! the counts in [`eval`]. No tensors here. Everything a later stage needs is checked here
//! once; later stages trust a [`Space`].

pub mod eval;
pub mod show;

use std::path::{Path, PathBuf};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Diagnostic, Result};
use crate::ops::{BnMode, Op, Shape};
use crate::spec::space::{self as raw, At, Block, Edges, Input, Output};
use crate::spec::{Sources, Span, Spanned};

/// A compiled, checked search space.
#[derive(Debug, Clone)]
pub struct Space {
    pub name: String,
    pub input: Input,
    /// The vocabulary, in alpha-column order.
    pub ops: Vec<(String, Op)>,
    pub cells: Vec<CellType>,
    pub network: Network,
    /// BN in the weight-sharing network's cells.
    pub supernet: BnMode,
    /// Cells the skeleton uses directly (the rest are motifs, used as candidates).
    pub skeleton_cells: Vec<usize>,
    /// The candidate lists of the searchable layers (`Choice`, `Stage`), in network order.
    pub slots: Vec<Slot>,
}

/// What an edge or a searchable layer may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Candidate {
    /// An op of the vocabulary, by index.
    Op(usize),
    /// A cell (a motif), by index.
    Cell(usize),
}

/// The derivation rule of a cell, names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Keep the `per_node` strongest incoming edges of each node; ops in `exclude` (indices
    /// into the vocabulary) are never chosen.
    TopK {
        per_node: usize,
        exclude: Vec<usize>,
    },
    /// Every edge takes its strongest candidate.
    ArgmaxPerEdge,
}

/// A cell type: a DAG over states `0..inputs` (the inputs) and `inputs..inputs + nodes`.
#[derive(Debug, Clone)]
pub struct CellType {
    pub name: String,
    pub inputs: usize,
    pub nodes: usize,
    pub output: Output,
    pub reduction: bool,
    pub rule: Rule,
    /// What every edge chooses among, in alpha-column order.
    pub candidates: Vec<Candidate>,
    /// Edges ordered by target node, then source state: the alpha-row order.
    pub edges: Vec<Edge>,
    /// The DAG: one graph node per state (weight = state index), one graph edge per cell
    /// edge (weight = edge index).
    pub graph: DiGraph<usize, usize>,
    /// Intermediate nodes in an order where every edge goes forward.
    pub order: Vec<usize>,
    /// Where the cell was defined.
    pub span: Span,
}

/// A cell edge from state `from` into node state `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
}

impl CellType {
    /// Number of states (inputs plus nodes).
    pub fn states(&self) -> usize {
        self.inputs + self.nodes
    }

    /// Edge indices into node state `to`, in edge order.
    pub fn incoming(&self, to: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.to == to)
            .map(|(i, _)| i)
    }

    /// The states the cell outputs.
    pub fn output_states(&self) -> Vec<usize> {
        match self.output {
            Output::Concat => (self.inputs..self.states()).collect(),
            Output::Last => vec![self.states() - 1],
        }
    }

    /// How many node outputs are concatenated (1 for `Last`).
    pub fn multiplier(&self) -> u64 {
        self.output_states().len() as u64
    }

    /// Candidates an edge may take in a discrete architecture.
    pub fn allowed(&self) -> impl Iterator<Item = Candidate> + '_ {
        self.candidates
            .iter()
            .copied()
            .filter(move |c| match (&self.rule, c) {
                (Rule::TopK { exclude, .. }, Candidate::Op(o)) => !exclude.contains(o),
                _ => true,
            })
    }
}

/// A searchable layer of a chain network.
#[derive(Debug, Clone)]
pub struct Slot {
    pub candidates: Vec<Candidate>,
    pub span: Span,
}

/// The skeleton: layers in execution order, each fed by earlier layers (or the image).
#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<Layer>,
    /// The skeleton as a DAG: node weight = layer index; an edge per input of each layer.
    pub graph: DiGraph<usize, ()>,
}

/// One layer of the skeleton with its shapes.
#[derive(Debug, Clone)]
pub struct Layer {
    pub kind: LayerKind,
    /// Layers this one reads (empty: the image).
    pub inputs: Vec<usize>,
    /// Shapes of its inputs, in order.
    pub input_shapes: Vec<Shape>,
    pub output: Shape,
    pub span: Span,
}

/// What a layer computes.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// Conv k×k (stride, same padding) + BN (+ activation) from the image or a layer.
    ConvBn {
        kernel: u32,
        stride: u32,
        act: raw::Act,
    },
    /// A cell: its inputs are first brought to `width` channels by `pre` (one per input).
    Cell {
        cell: usize,
        width: u64,
        stride: u32,
        pre: Vec<Pre>,
    },
    /// A searchable layer: slot index into [`Space::slots`].
    Choice {
        slot: usize,
        stride: u32,
    },
    /// NAS-Bench-201's residual block.
    Residual {
        stride: u32,
    },
    BnRelu,
    /// Global average pool and linear to the classes.
    Head,
}

/// How a `Stacked` cell brings an input to its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// Input used as is (its shape already fits).
    None,
    /// ReLU, conv 1×1, BN.
    ReluConvBn,
    /// FactorizedReduce: the input comes from before a reduction.
    FactorizedReduce,
}

/// Values a pipeline imposes on the space, with where it wrote them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub input: Option<Input>,
    pub channels: Option<(u32, Span)>,
    pub layers: Option<(u32, Span)>,
}

/// Reads a space file and the libraries it includes into `sources`. `referenced_at` is
/// where the path was written (a pipeline's `space:` field), for the error when it cannot
/// be read.
pub fn read(
    sources: &mut Sources,
    path: &Path,
    referenced_at: Option<Span>,
) -> Result<raw::SearchSpace> {
    let (_, space) = load_file::<raw::SearchSpace>(sources, path, referenced_at)?;
    expand_includes(sources, path, space)
}

/// Puts the ops and cells of the libraries a space (read from `path`) includes before its
/// own, depth first.
pub fn expand_includes(
    sources: &mut Sources,
    path: &Path,
    mut space: raw::SearchSpace,
) -> Result<raw::SearchSpace> {
    let mut ops = Vec::new();
    let mut cells = Vec::new();
    let mut stack = vec![canonical(path)];
    let includes = std::mem::take(&mut space.include);
    gather(sources, path, &includes, &mut stack, &mut ops, &mut cells)?;
    ops.append(&mut space.ops.value);
    space.ops.value = ops;
    cells.append(&mut space.cells.value.0);
    space.cells.value.0 = cells;
    Ok(space)
}

/// Reads and compiles a space file.
pub fn load(
    sources: &mut Sources,
    path: &Path,
    referenced_at: Option<Span>,
    overrides: &Overrides,
) -> Result<Space> {
    let raw = read(sources, path, referenced_at)?;
    compile(sources, &raw, overrides)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Parses `path` as `T`; an unreadable file is reported at `referenced_at` when given.
pub(crate) fn load_file<T: serde::de::DeserializeOwned>(
    sources: &mut Sources,
    path: &Path,
    referenced_at: Option<Span>,
) -> Result<(u32, T)> {
    match (sources.load::<T>(path), referenced_at) {
        (Err(crate::error::Error::Io { path, source }), Some(at)) => Err(sources
            .diag(at, format!("cannot read {}: {source}", path.display()))
            .into()),
        (r, _) => r,
    }
}

type RawOps = Vec<(Spanned<String>, Spanned<Op>)>;
type RawCells = Vec<(Spanned<String>, Spanned<raw::Cell>)>;

/// Appends the ops and cells of `includes` (paths relative to `from`), depth first.
fn gather(
    sources: &mut Sources,
    from: &Path,
    includes: &[Spanned<String>],
    stack: &mut Vec<PathBuf>,
    ops: &mut RawOps,
    cells: &mut RawCells,
) -> Result<()> {
    let dir = from.parent().unwrap_or(Path::new(""));
    for inc in includes {
        let path = dir.join(&inc.value);
        let canon = canonical(&path);
        if let Some(i) = stack.iter().position(|p| *p == canon) {
            let chain: Vec<String> = stack[i..]
                .iter()
                .chain([&canon])
                .map(|p| {
                    p.file_name().map_or(p.display().to_string(), |f| {
                        f.to_string_lossy().into_owned()
                    })
                })
                .collect();
            return Err(sources
                .diag(inc.span, format!("include cycle: {}", chain.join(" → ")))
                .into());
        }
        let (_, mut lib) = load_file::<raw::Library>(sources, &path, Some(inc.span))?;
        stack.push(canon);
        gather(sources, &path, &lib.include, stack, ops, cells)?;
        stack.pop();
        ops.append(&mut lib.ops);
        cells.append(&mut lib.cells.0);
    }
    Ok(())
}

/// Compiles and checks a parsed space. Every error points at the file and place at fault.
pub fn compile(sources: &Sources, raw: &raw::SearchSpace, ov: &Overrides) -> Result<Space> {
    let mut c = Compiler {
        src: sources,
        ov,
        ops: Vec::new(),
        cell_names: Vec::new(),
    };
    let space = c.compile(raw).map_err(|d| {
        let mut d = *d;
        if d.help.is_none() {
            d.help = c.override_note();
        }
        d
    })?;
    Ok(space)
}

/// The most cells a space may use only as candidates. Counting architectures exactly is
/// exponential in this number.
pub const MAX_MOTIFS: usize = 12;

type R<T> = std::result::Result<T, Box<Diagnostic>>;

struct Compiler<'a> {
    src: &'a Sources,
    ov: &'a Overrides,
    ops: Vec<(String, Op)>,
    cell_names: Vec<String>,
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl<'a> Compiler<'a> {
    fn err(&self, span: Span, msg: impl Into<String>) -> Box<Diagnostic> {
        Box::new(self.src.diag(span, msg))
    }

    fn override_note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((v, span)) = self.ov.channels {
            let d = self.src.diag(span, "");
            parts.push(format!(
                "channels = {v} (set at {}:{}:{})",
                d.file, d.line, d.col
            ));
        }
        if let Some((v, span)) = self.ov.layers {
            let d = self.src.diag(span, "");
            parts.push(format!(
                "layers = {v} (set at {}:{}:{})",
                d.file, d.line, d.col
            ));
        }
        if let Some(i) = self.ov.input {
            parts.push(format!(
                "input {}x{}x{} with {} classes (from the pipeline's data)",
                i.channels, i.size, i.size, i.classes
            ));
        }
        (!parts.is_empty()).then(|| format!("the space was compiled with {}", parts.join(", ")))
    }

    fn compile(&mut self, raw: &raw::SearchSpace) -> R<Space> {
        if raw.name.trim().is_empty() {
            return Err(self.err(raw.name.span, "the space name is empty"));
        }
        let input = self.ov.input.unwrap_or(raw.input.value);
        for (v, what) in [
            (input.channels, "input channels"),
            (input.size, "input size"),
            (input.classes, "classes"),
        ] {
            if v == 0 {
                return Err(self.err(raw.input.span, format!("{what} must be at least 1")));
            }
        }

        // The vocabulary.
        if raw.ops.is_empty() {
            return Err(self.err(raw.ops.span, "the op list is empty"));
        }
        for (name, op) in raw.ops.iter() {
            self.check_name(name, "op")?;
            if self.ops.iter().any(|(n, _)| *n == name.value) {
                return Err(self.err(name.span, format!("op \"{}\" is defined twice", name.value)));
            }
            op.check()
                .map_err(|m| self.err(op.span, format!("op \"{}\": {m}", name.value)))?;
            self.ops.push((name.value.clone(), op.value));
        }
        for (name, _) in raw.cells.0.iter() {
            self.check_name(name, "cell")?;
            if self.ops.iter().any(|(n, _)| *n == name.value) {
                return Err(self.err(
                    name.span,
                    format!("cell \"{}\" has the name of an op", name.value),
                ));
            }
            if self.cell_names.contains(&name.value) {
                return Err(self.err(
                    name.span,
                    format!("cell \"{}\" is defined twice", name.value),
                ));
            }
            self.cell_names.push(name.value.clone());
        }

        let default_rule = &raw.derive;
        let mut cells = Vec::new();
        for (name, cell) in raw.cells.0.iter() {
            cells.push(self.cell(name, cell, default_rule)?);
        }
        self.check_motif_cycles(raw, &cells)?;

        let mut space = Space {
            name: raw.name.value.clone(),
            input,
            ops: self.ops.clone(),
            cells,
            network: Network {
                layers: Vec::new(),
                graph: DiGraph::new(),
            },
            supernet: BnMode {
                affine: raw.supernet.affine,
                pool_bn: raw.supernet.pool_bn,
            },
            skeleton_cells: Vec::new(),
            slots: Vec::new(),
        };
        let layers = match &raw.network.value {
            raw::Network::Stacked {
                stem,
                channels,
                layers,
                normal,
                reduction,
                reductions_at,
                head: _,
            } => self.stacked(
                &mut space,
                stem,
                channels,
                layers,
                normal,
                reduction,
                reductions_at,
            )?,
            raw::Network::Sequence {
                width,
                depth,
                blocks,
            } => self.sequence(
                &mut space,
                raw.network.span,
                width.as_ref(),
                depth.as_ref(),
                blocks,
            )?,
        };
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..layers.len()).map(|i| graph.add_node(i)).collect();
        for (i, l) in layers.iter().enumerate() {
            for &j in &l.inputs {
                graph.add_edge(nodes[j], nodes[i], ());
            }
        }
        space.network = Network { layers, graph };

        // Every cell must be reachable from the skeleton.
        let used = space.used_cells();
        for (i, (name, _)) in raw.cells.0.iter().enumerate() {
            if !used[i] {
                return Err(self.err(
                    name.span,
                    format!("cell \"{}\" is defined but never used", name.value),
                ));
            }
        }
        let motifs = space.motifs();
        if motifs.len() > MAX_MOTIFS {
            return Err(self.err(space.cells[motifs[MAX_MOTIFS]].span, format!("a space may have at most {MAX_MOTIFS} motif cells (cells used only as candidates); this one has {}", motifs.len())));
        }
        // A motif takes one input and its stride from the edge it sits on.
        for (i, cell) in space.cells.iter().enumerate() {
            if !space.skeleton_cells.contains(&i) {
                if cell.inputs != 1 {
                    return Err(self.err(cell.span, format!(
                        "cell \"{}\" is used as a candidate (a motif), so it must take 1 input, not {}",
                        cell.name, cell.inputs
                    )));
                }
                if cell.reduction {
                    return Err(self.err(cell.span, format!(
                        "cell \"{}\" is used as a candidate (a motif) and takes its stride from the edge; remove `reduction: true`",
                        cell.name
                    )));
                }
            }
        }
        Ok(space)
    }

    fn check_name(&self, name: &Spanned<String>, what: &str) -> R<()> {
        if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                name.span,
                format!(
                    "{what} name {:?} must be non-empty and have no spaces",
                    name.value
                ),
            ));
        }
        Ok(())
    }

    /// Resolves a candidate name to an op or a cell.
    fn candidate(&self, name: &Spanned<String>) -> R<Candidate> {
        if let Some(i) = self.ops.iter().position(|(n, _)| *n == name.value) {
            return Ok(Candidate::Op(i));
        }
        if let Some(i) = self.cell_names.iter().position(|n| *n == name.value) {
            return Ok(Candidate::Cell(i));
        }
        let known: Vec<&str> = self
            .ops
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.cell_names.iter().map(String::as_str))
            .collect();
        Err(self.unknown(name, "op or cell", &known))
    }

    fn unknown(&self, name: &Spanned<String>, what: &str, known: &[&str]) -> Box<Diagnostic> {
        let best = known
            .iter()
            .map(|k| (strsim::levenshtein(k, &name.value), *k))
            .min()
            .filter(|(d, k)| *d <= 2.max(k.len() / 3));
        let help = match best {
            Some((_, k)) => format!("did you mean \"{k}\"? known: {}", known.join(", ")),
            None => format!("known: {}", known.join(", ")),
        };
        Box::new(
            self.src
                .diag(name.span, format!("unknown {what} \"{}\"", name.value))
                .with_help(help),
        )
    }

    fn candidates(&self, list: &Spanned<Vec<Spanned<String>>>, whose: &str) -> R<Vec<Candidate>> {
        if list.is_empty() {
            return Err(self.err(list.span, format!("{whose}: the candidate list is empty")));
        }
        let mut out = Vec::new();
        for name in list.iter() {
            let c = self.candidate(name)?;
            if out.contains(&c) {
                return Err(self.err(
                    name.span,
                    format!("{whose}: candidate \"{}\" is listed twice", name.value),
                ));
            }
            out.push(c);
        }
        Ok(out)
    }

    fn rule(&self, d: &Spanned<raw::Derive>) -> R<Rule> {
        Ok(match &d.value {
            raw::Derive::ArgmaxPerEdge => Rule::ArgmaxPerEdge,
            raw::Derive::TopK { per_node, exclude } => {
                if *per_node == 0 {
                    return Err(self.err(d.span, "TopK: per_node must be at least 1"));
                }
                let mut ex = Vec::new();
                for name in exclude {
                    match self.ops.iter().position(|(n, _)| *n == name.value) {
                        Some(i) => ex.push(i),
                        None => {
                            let known: Vec<&str> =
                                self.ops.iter().map(|(n, _)| n.as_str()).collect();
                            return Err(self.unknown(name, "op", &known));
                        }
                    }
                }
                Rule::TopK {
                    per_node: *per_node as usize,
                    exclude: ex,
                }
            }
        })
    }

    fn cell(
        &self,
        name: &Spanned<String>,
        cell: &Spanned<raw::Cell>,
        default_rule: &Spanned<raw::Derive>,
    ) -> R<CellType> {
        let whose = format!("cell \"{}\"", name.value);
        for (v, field) in [(&cell.inputs, "inputs"), (&cell.nodes, "nodes")] {
            if v.value == 0 {
                return Err(self.err(v.span, format!("{whose}: `{field}` must be at least 1")));
            }
        }
        let (inputs, nodes) = (cell.inputs.value as usize, cell.nodes.value as usize);
        let states = inputs + nodes;
        let rule = self.rule(cell.derive.as_ref().unwrap_or(default_rule))?;
        let candidates = match &cell.candidates {
            Some(list) => self.candidates(list, &whose)?,
            None => (0..self.ops.len()).map(Candidate::Op).collect(),
        };

        let mut edges: Vec<(Edge, Span)> = Vec::new();
        match &cell.edges.value {
            Edges::Dense => {
                for to in inputs..states {
                    for from in 0..to {
                        edges.push((Edge { from, to }, cell.edges.span));
                    }
                }
            }
            Edges::Explicit(list) => {
                if list.is_empty() {
                    return Err(
                        self.err(cell.edges.span, format!("{whose}: the edge list is empty"))
                    );
                }
                for e in list {
                    let (from, to) = (e.0 as usize, e.1 as usize);
                    let bad = if from >= states {
                        Some(format!(
                            "state {from} does not exist (states are 0..{states}: {} then {})",
                            plural(inputs, "input"),
                            plural(nodes, "node")
                        ))
                    } else if to >= states {
                        Some(format!(
                            "state {to} does not exist (states are 0..{states}: {} then {})",
                            plural(inputs, "input"),
                            plural(nodes, "node")
                        ))
                    } else if to < inputs {
                        Some(format!(
                            "edge ({from}, {to}) leads into input {to}; edges must lead into a node ({inputs}..{states})"
                        ))
                    } else if from == to {
                        Some(format!("edge ({from}, {to}) is a loop"))
                    } else if edges.iter().any(|(x, _)| x.from == from && x.to == to) {
                        Some(format!("edge ({from}, {to}) is listed twice"))
                    } else {
                        None
                    };
                    if let Some(m) = bad {
                        return Err(self.err(e.span, format!("{whose}: {m}")));
                    }
                    edges.push((Edge { from, to }, e.span));
                }
                edges.sort_by_key(|(e, _)| (e.to, e.from));
            }
        }

        let mut graph = DiGraph::new();
        let gnodes: Vec<NodeIndex> = (0..states).map(|s| graph.add_node(s)).collect();
        for (i, (e, _)) in edges.iter().enumerate() {
            graph.add_edge(gnodes[e.from], gnodes[e.to], i);
        }
        for to in inputs..states {
            if !edges.iter().any(|(e, _)| e.to == to) {
                return Err(self.err(cell.edges.span, format!("{whose}: node {to} has no input")));
            }
        }
        let order = match toposort(&graph, None) {
            Ok(o) => o
                .into_iter()
                .map(|n| graph[n])
                .filter(|&s| s >= inputs)
                .collect(),
            Err(cycle) => {
                let path = find_cycle(&graph, cycle.node_id());
                let at = edges
                    .iter()
                    .find(|(e, _)| e.from == path[0] && e.to == path[1])
                    .map_or(cell.edges.span, |(_, s)| *s);
                let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                return Err(self.err(
                    at,
                    format!(
                        "{whose}: the edges form a cycle through states {}",
                        path.join(" → ")
                    ),
                ));
            }
        };
        let output = cell.output.value;
        let outputs: Vec<usize> = match output {
            Output::Concat => (inputs..states).collect(),
            Output::Last => vec![states - 1],
        };
        // Every state must reach an output.
        for s in 0..states {
            let reaches = outputs
                .iter()
                .any(|&o| petgraph::algo::has_path_connecting(&graph, gnodes[s], gnodes[o], None));
            if !reaches {
                let what = if s < inputs {
                    format!("input {s}")
                } else {
                    format!("node {s}")
                };
                return Err(self.err(
                    cell.edges.span,
                    format!(
                        "{whose}: {what} reaches no output (the output is {})",
                        match output {
                            Output::Concat => "the concatenation of all nodes".to_string(),
                            Output::Last => format!("node {}", states - 1),
                        }
                    ),
                ));
            }
        }
        // Arity of the derivation rule.
        if let Rule::TopK { per_node, exclude } = &rule {
            for to in inputs..states {
                let n = edges.iter().filter(|(e, _)| e.to == to).count();
                if n < *per_node {
                    let at = cell.derive.as_ref().map_or(default_rule.span, |d| d.span);
                    return Err(self.err(
                        at,
                        format!(
                            "{whose}: node {to} has {}, fewer than TopK's per_node = {per_node}",
                            plural(n, "incoming edge")
                        ),
                    ));
                }
            }
            if candidates
                .iter()
                .all(|c| matches!(c, Candidate::Op(o) if exclude.contains(o)))
            {
                let at = cell.candidates.as_ref().map_or(cell.span, |c| c.span);
                return Err(self.err(
                    at,
                    format!("{whose}: every candidate is excluded by the derivation rule"),
                ));
            }
        }
        Ok(CellType {
            name: name.value.clone(),
            inputs,
            nodes,
            output,
            reduction: cell.reduction,
            rule,
            candidates,
            edges: edges.into_iter().map(|(e, _)| e).collect(),
            graph,
            order,
            span: cell.span,
        })
    }

    fn check_motif_cycles(&self, raw: &raw::SearchSpace, cells: &[CellType]) -> R<()> {
        let mut g = DiGraph::<usize, ()>::new();
        let n: Vec<NodeIndex> = (0..cells.len()).map(|i| g.add_node(i)).collect();
        for (i, c) in cells.iter().enumerate() {
            for cand in &c.candidates {
                if let Candidate::Cell(j) = cand {
                    g.add_edge(n[i], n[*j], ());
                }
            }
        }
        if let Err(cycle) = toposort(&g, None) {
            let path = find_cycle(&g, cycle.node_id());
            let names: Vec<String> = path
                .iter()
                .map(|&i| format!("\"{}\"", cells[i].name))
                .collect();
            let first = &raw.cells.0[path[0]];
            let at = first.1.candidates.as_ref().map_or(first.1.span, |c| c.span);
            return Err(self.err(
                at,
                format!(
                    "cell \"{}\" contains itself through its candidates: {}",
                    cells[path[0]].name,
                    names.join(" → ")
                ),
            ));
        }
        Ok(())
    }

    fn cell_index(&self, name: &Spanned<String>) -> R<usize> {
        self.cell_names
            .iter()
            .position(|n| *n == name.value)
            .ok_or_else(|| {
                let known: Vec<&str> = self.cell_names.iter().map(String::as_str).collect();
                self.unknown(name, "cell", &known)
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn stacked(
        &self,
        space: &mut Space,
        stem: &Spanned<raw::Stem>,
        channels: &Spanned<u32>,
        layers: &Spanned<u32>,
        normal: &Spanned<String>,
        reduction: &Spanned<String>,
        reductions_at: &Spanned<Vec<Spanned<At>>>,
    ) -> R<Vec<Layer>> {
        let c0 = self.ov.channels.map_or(channels.value, |o| o.0);
        let n = self.ov.layers.map_or(layers.value, |o| o.0);
        if c0 == 0 {
            return Err(self.err(channels.span, "`channels` must be at least 1"));
        }
        if n == 0 {
            return Err(self.err(layers.span, "`layers` must be at least 1"));
        }
        let normal_i = self.cell_index(normal)?;
        let reduce_i = self.cell_index(reduction)?;
        if space.cells[normal_i].reduction {
            return Err(self.err(
                normal.span,
                format!(
                    "`normal` names cell \"{}\", which is a reduction cell",
                    normal.value
                ),
            ));
        }
        if !space.cells[reduce_i].reduction {
            return Err(self.err(
                reduction.span,
                format!(
                    "`reduction` names cell \"{}\", which lacks `reduction: true`",
                    reduction.value
                ),
            ));
        }
        for i in [normal_i, reduce_i] {
            let c = &space.cells[i];
            if c.inputs > 2 {
                return Err(self.err(c.span, format!(
                    "cell \"{}\" takes {} inputs; a Stacked network feeds a cell the outputs of the 1 or 2 cells before it",
                    c.name, c.inputs
                )));
            }
        }
        space.skeleton_cells = vec![normal_i, reduce_i];
        space.skeleton_cells.dedup();

        let mut positions = Vec::new();
        for at in reductions_at.iter() {
            let p = match at.value {
                At::Third => n / 3,
                At::TwoThirds => 2 * n / 3,
                At::Half => n / 2,
                At::Index(i) => i,
            };
            if p >= n {
                return Err(self.err(
                    at.span,
                    format!(
                        "reduction position {p} is out of range: the network has {} (0..{n})",
                        plural(n as usize, "cell")
                    ),
                ));
            }
            if positions.contains(&p) {
                return Err(self.err(
                    at.span,
                    format!("reduction position {p} is given twice (with {n} layers)"),
                ));
            }
            positions.push(p);
        }

        let raw::Stem::ConvBn { kernel, multiplier } = stem.value;
        if kernel == 0 || kernel % 2 == 0 {
            return Err(self.err(
                stem.span,
                format!("stem kernel must be an odd number ≥ 1, got {kernel}"),
            ));
        }
        let stem_c = multiplier * c0 as f64;
        if !(stem_c >= 1.0 && (stem_c - stem_c.round()).abs() < 1e-9) {
            return Err(self.err(stem.span, format!(
                "stem channels = multiplier {multiplier} × channels {c0} = {stem_c}, which is not a whole number of channels"
            )));
        }
        let image = space.image();
        let stem_shape = Shape {
            c: stem_c.round() as u64,
            ..image
        };
        let mut out = vec![Layer {
            kind: LayerKind::ConvBn {
                kernel,
                stride: 1,
                act: raw::Act::None,
            },
            inputs: vec![],
            input_shapes: vec![image],
            output: stem_shape,
            span: stem.span,
        }];
        let (mut pp, mut p) = (0usize, 0usize);
        let mut width = c0 as u64;
        let mut reduction_prev = false;
        for i in 0..n {
            let is_red = positions.contains(&i);
            if is_red {
                width *= 2;
            }
            let ci = if is_red { reduce_i } else { normal_i };
            let cell = &space.cells[ci];
            let span = if is_red { reduction.span } else { normal.span };
            let ctx = |m: String| {
                self.err(
                    span,
                    format!("cell {i} (\"{}\", width {width}): {m}", cell.name),
                )
            };
            let (srcs, pre) = if cell.inputs == 2 {
                (
                    vec![pp, p],
                    vec![
                        if reduction_prev {
                            Pre::FactorizedReduce
                        } else {
                            Pre::ReluConvBn
                        },
                        Pre::ReluConvBn,
                    ],
                )
            } else {
                (vec![p], vec![Pre::ReluConvBn])
            };
            let in_shapes: Vec<Shape> = srcs.iter().map(|&s| out[s].output).collect();
            let mut states = Vec::new();
            for (k, (&shape, &pr)) in in_shapes.iter().zip(&pre).enumerate() {
                let s = eval::preprocess(pr, shape, width, BnMode::FINAL)
                    .map_err(|m| ctx(format!("preprocessing input {k}: {m}")))?;
                states.push(s.output);
            }
            if states.windows(2).any(|w| w[0] != w[1]) {
                return Err(ctx(format!(
                    "its inputs have shapes {} and {} after preprocessing",
                    states[0], states[1]
                )));
            }
            let stride = if is_red { 2 } else { 1 };
            let shapes = eval::infer_cell(&space.ops, &space.cells, ci, &states, width, stride)
                .map_err(ctx)?;
            let output = eval::cell_output(cell, &shapes);
            out.push(Layer {
                kind: LayerKind::Cell {
                    cell: ci,
                    width,
                    stride,
                    pre,
                },
                inputs: srcs,
                input_shapes: in_shapes,
                output,
                span,
            });
            pp = p;
            p = out.len() - 1;
            reduction_prev = is_red;
        }
        let last = out[p].output;
        out.push(Layer {
            kind: LayerKind::Head,
            inputs: vec![p],
            input_shapes: vec![last],
            output: Shape {
                c: space.input.classes as u64,
                h: 1,
                w: 1,
            },
            span: Span::default(),
        });
        Ok(out)
    }

    fn sequence(
        &self,
        space: &mut Space,
        span: Span,
        width: Option<&Spanned<u32>>,
        depth: Option<&Spanned<u32>>,
        blocks: &[Spanned<Block>],
    ) -> R<Vec<Layer>> {
        let scale = |ov: Option<(u32, Span)>,
                     base: Option<&Spanned<u32>>,
                     what: &str|
         -> R<Option<(u64, u64)>> {
            match (ov, base) {
                (None, _) => Ok(None),
                (Some((_, sp)), None) => Err(Box::new(self.src.diag(sp, format!(
                    "cannot override {what}: the space's Sequence network declares no nominal `{what}` to scale from"
                )))),
                (Some((v, sp)), Some(b)) => {
                    if v == 0 {
                        return Err(Box::new(self.src.diag(sp, format!("{what} must be at least 1"))));
                    }
                    if b.value == 0 {
                        return Err(self.err(b.span, format!("`{what}` must be at least 1")));
                    }
                    Ok(Some((v as u64, b.value as u64)))
                }
            }
        };
        let wscale = scale(self.ov.channels, width, "width")?;
        let dscale = scale(self.ov.layers, depth, "depth")?;
        let scaled = |v: u32, by: Option<(u64, u64)>, sp: Span, what: &str| -> R<u64> {
            match by {
                None => Ok(v as u64),
                Some((num, den)) if (v as u64 * num) % den == 0 => Ok(v as u64 * num / den),
                Some((num, den)) => Err(self.err(
                    sp,
                    format!(
                        "{what} {v} scaled by {num}/{den} is {}, not a whole number",
                        v as f64 * num as f64 / den as f64
                    ),
                )),
            }
        };

        let mut flat: Vec<&Spanned<Block>> = Vec::new();
        // Flatten repeats in order.
        fn flatten<'b>(
            b: &'b Spanned<Block>,
            out: &mut Vec<&'b Spanned<Block>>,
            count: &dyn Fn(u32, Span) -> R<u64>,
            err: &dyn Fn(Span, String) -> Box<Diagnostic>,
        ) -> R<()> {
            if let Block::Repeat(n, inner) = &b.value {
                if *n == 0 {
                    return Err(err(b.span, "Repeat count must be at least 1".into()));
                }
                for _ in 0..count(*n, b.span)? {
                    flatten(inner, out, count, err)?;
                }
            } else {
                out.push(b);
            }
            Ok(())
        }
        let count = |n: u32, sp: Span| scaled(n, dscale, sp, "repeat count");
        let err = |sp: Span, m: String| self.err(sp, m);
        for b in blocks {
            flatten(b, &mut flat, &count, &err)?;
        }
        if flat.is_empty() {
            return Err(self.err(span, "the Sequence has no blocks"));
        }

        let image = space.image();
        let mut layers: Vec<Layer> = Vec::new();
        let mut shape = image;
        for (bi, b) in flat.iter().enumerate() {
            let prev = layers.len().checked_sub(1);
            let inputs: Vec<usize> = prev.into_iter().collect();
            let ctx = |m: String| self.err(b.span, m);
            if matches!(layers.last().map(|l| &l.kind), Some(LayerKind::Head)) {
                return Err(ctx(
                    "a block follows the head; GlobalPoolLinear must be last".into(),
                ));
            }
            let push = |kind: LayerKind, output: Shape, layers: &mut Vec<Layer>| {
                layers.push(Layer {
                    kind,
                    inputs: inputs.clone(),
                    input_shapes: vec![shape],
                    output,
                    span: b.span,
                });
                output
            };
            let stride_ok = |s: u32| -> R<()> {
                if s == 1 || s == 2 {
                    Ok(())
                } else {
                    Err(ctx(format!("stride must be 1 or 2, got {s}")))
                }
            };
            shape = match &b.value {
                Block::ConvBn {
                    kernel,
                    channels,
                    stride,
                    act,
                } => {
                    stride_ok(*stride)?;
                    if *kernel == 0 || kernel % 2 == 0 {
                        return Err(ctx(format!(
                            "kernel must be an odd number ≥ 1, got {kernel}"
                        )));
                    }
                    let c = self.channels(*channels, wscale, b.span, &scaled)?;
                    let a =
                        crate::ops::conv_bn_cost(shape, c, *kernel, *stride).map_err(|m| ctx(m))?;
                    push(
                        LayerKind::ConvBn {
                            kernel: *kernel,
                            stride: *stride,
                            act: *act,
                        },
                        a.output,
                        &mut layers,
                    )
                }
                Block::BnRelu => push(LayerKind::BnRelu, shape, &mut layers),
                Block::ResidualBlock { channels, stride } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span, &scaled)?;
                    let a = eval::residual(shape, c, *stride, BnMode::FINAL).map_err(|m| ctx(m))?;
                    push(
                        LayerKind::Residual { stride: *stride },
                        a.output,
                        &mut layers,
                    )
                }
                Block::Cell(name) => {
                    let ci = self.cell_index(&Spanned {
                        value: name.clone(),
                        span: b.span,
                    })?;
                    let cell = &space.cells[ci];
                    if cell.inputs != 1 {
                        return Err(ctx(format!(
                            "cell \"{name}\" takes {} inputs; cells in a Sequence take 1",
                            cell.inputs
                        )));
                    }
                    if !space.skeleton_cells.contains(&ci) {
                        space.skeleton_cells.push(ci);
                    }
                    let stride = if cell.reduction { 2 } else { 1 };
                    let width = eval::node_width(cell, shape.c)
                        .map_err(|m| ctx(format!("cell \"{name}\": {m}")))?;
                    let shapes =
                        eval::infer_cell(&space.ops, &space.cells, ci, &[shape], width, stride)
                            .map_err(|m| {
                                ctx(format!("cell \"{name}\" (block {bi}, input {shape}): {m}"))
                            })?;
                    let out = eval::cell_output(cell, &shapes);
                    push(
                        LayerKind::Cell {
                            cell: ci,
                            width,
                            stride,
                            pre: vec![Pre::None],
                        },
                        out,
                        &mut layers,
                    )
                }
                Block::Choice {
                    channels,
                    stride,
                    candidates,
                } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span, &scaled)?;
                    let cands = self.candidates(candidates, "Choice")?;
                    self.slot(
                        space,
                        cands,
                        candidates.span,
                        shape,
                        c,
                        *stride,
                        bi,
                        &mut layers,
                        &inputs,
                        b.span,
                    )?
                }
                Block::Stage {
                    channels,
                    layers: n,
                    stride,
                    candidates,
                } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span, &scaled)?;
                    if *n == 0 {
                        return Err(ctx("a Stage needs at least 1 layer".into()));
                    }
                    let n = scaled(*n, dscale, b.span, "stage layers")?;
                    let cands = self.candidates(candidates, "Stage")?;
                    let first: Vec<Candidate> = cands
                        .iter()
                        .copied()
                        .filter(|c| !matches!(c, Candidate::Op(o) if space.ops[*o].1.is_identity()))
                        .collect();
                    if first.is_empty() {
                        return Err(self.err(candidates.span, "Stage: the first layer changes shape and every candidate is an Identity"));
                    }
                    let mut s = shape;
                    for k in 0..n {
                        let inputs: Vec<usize> = layers.len().checked_sub(1).into_iter().collect();
                        let (cs, st) = if k == 0 {
                            (first.clone(), *stride)
                        } else {
                            (cands.clone(), 1)
                        };
                        s = self.slot(
                            space,
                            cs,
                            candidates.span,
                            s,
                            c,
                            st,
                            bi,
                            &mut layers,
                            &inputs,
                            b.span,
                        )?;
                    }
                    s
                }
                Block::GlobalPoolLinear => push(
                    LayerKind::Head,
                    Shape {
                        c: space.input.classes as u64,
                        h: 1,
                        w: 1,
                    },
                    &mut layers,
                ),
                Block::Repeat(..) => unreachable!("repeats are flattened above"),
            };
        }
        if !matches!(layers.last().map(|l| &l.kind), Some(LayerKind::Head)) {
            return Err(self.err(span, "a Sequence must end with GlobalPoolLinear"));
        }
        Ok(layers)
    }

    fn channels(
        &self,
        c: u32,
        by: Option<(u64, u64)>,
        sp: Span,
        scaled: &dyn Fn(u32, Option<(u64, u64)>, Span, &str) -> R<u64>,
    ) -> R<u64> {
        if c == 0 {
            return Err(self.err(sp, "channels must be at least 1"));
        }
        scaled(c, by, sp, "channels")
    }

    #[allow(clippy::too_many_arguments)]
    fn slot(
        &self,
        space: &mut Space,
        cands: Vec<Candidate>,
        cand_span: Span,
        input: Shape,
        c_out: u64,
        stride: u32,
        block: usize,
        layers: &mut Vec<Layer>,
        inputs: &[usize],
        span: Span,
    ) -> R<Shape> {
        let mut out: Option<(Shape, Candidate)> = None;
        for &c in &cands {
            let a = eval::apply_candidate(&space.ops, &space.cells, c, input, c_out, stride, space.supernet)
                .map_err(|m| self.err(cand_span, format!(
                    "candidate \"{}\" cannot map {input} to {c_out} channels at stride {stride} (block {block}): {m}",
                    space.candidate_name(c)
                )))?;
            if let Some((o, first)) = out {
                if o != a.output {
                    return Err(self.err(cand_span, format!(
                        "candidates disagree on the output shape at block {block}: \"{}\" gives {o}, \"{}\" gives {}",
                        space.candidate_name(first), space.candidate_name(c), a.output
                    )));
                }
            } else {
                out = Some((a.output, c));
            }
        }
        let Some((shape, _)) = out else {
            return Err(self.err(cand_span, "the candidate list is empty"));
        };
        let slot = space.slots.len();
        space.slots.push(Slot {
            candidates: cands,
            span: cand_span,
        });
        layers.push(Layer {
            kind: LayerKind::Choice { slot, stride },
            inputs: inputs.to_vec(),
            input_shapes: vec![input],
            output: shape,
            span,
        });
        Ok(shape)
    }
}

/// A cycle through `start` in `g`, as node weights, first node repeated at the end.
fn find_cycle<E>(g: &DiGraph<usize, E>, start: NodeIndex) -> Vec<usize> {
    // Depth-first search for a path from a successor of `start` back to `start`.
    fn dfs<E>(
        g: &DiGraph<usize, E>,
        at: NodeIndex,
        goal: NodeIndex,
        seen: &mut Vec<NodeIndex>,
        path: &mut Vec<NodeIndex>,
    ) -> bool {
        for next in g.neighbors(at) {
            if next == goal {
                path.push(next);
                return true;
            }
            if !seen.contains(&next) {
                seen.push(next);
                path.push(next);
                if dfs(g, next, goal, seen, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = vec![start];
    if !dfs(g, start, start, &mut seen, &mut path) {
        path.push(start);
    }
    path.into_iter().map(|n| g[n]).collect()
}

impl Space {
    /// The image shape.
    pub fn image(&self) -> Shape {
        Shape {
            c: self.input.channels as u64,
            h: self.input.size as u64,
            w: self.input.size as u64,
        }
    }

    /// The name of a candidate.
    pub fn candidate_name(&self, c: Candidate) -> &str {
        match c {
            Candidate::Op(i) => &self.ops[i].0,
            Candidate::Cell(i) => &self.cells[i].name,
        }
    }

    /// Looks a candidate up by name.
    pub fn find_candidate(&self, name: &str) -> Option<Candidate> {
        self.ops
            .iter()
            .position(|(n, _)| n == name)
            .map(Candidate::Op)
            .or_else(|| {
                self.cells
                    .iter()
                    .position(|c| c.name == name)
                    .map(Candidate::Cell)
            })
    }

    /// Which cells are reachable from the skeleton (directly or as motifs).
    pub fn used_cells(&self) -> Vec<bool> {
        let mut used = vec![false; self.cells.len()];
        let mut stack: Vec<usize> = self.skeleton_cells.clone();
        for s in &self.slots {
            stack.extend(s.candidates.iter().filter_map(|c| match c {
                Candidate::Cell(i) => Some(*i),
                _ => None,
            }));
        }
        while let Some(i) = stack.pop() {
            if !used[i] {
                used[i] = true;
                stack.extend(self.cells[i].candidates.iter().filter_map(|c| match c {
                    Candidate::Cell(j) => Some(*j),
                    _ => None,
                }));
            }
        }
        used
    }

    /// Cells used only as candidates.
    pub fn motifs(&self) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|i| !self.skeleton_cells.contains(i))
            .collect()
    }

    /// The cell layers of the skeleton, in order.
    pub fn cell_layers(&self) -> impl Iterator<Item = (usize, &Layer)> {
        self.network
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.kind, LayerKind::Cell { .. }))
    }
}
