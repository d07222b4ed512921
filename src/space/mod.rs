//! Compiles a search-space file into checked petgraph DAGs.
//!
//! Owns: name resolution (ops, cells, motifs), the cell DAGs and their checks (cycles, nodes
//! with no input, states that reach no output, arity of the derivation rule), the network
//! skeleton (a DAG of layers), shape inference through every candidate of every edge, the
//! counts in [`eval`], and the layer and cell walk every representation of a network uses
//! ([`walk`]). No tensors here. Everything a later stage needs is checked here
//! once; later stages trust a [`Space`].

mod cell;
pub mod discrete;
pub mod eval;
pub mod genotype;
mod network;
pub mod show;
pub mod walk;

use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Diagnostic, Result};
use crate::ops::{BnMode, Op, Shape};
use crate::spec::space::{self as raw, Input, Output};
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

    /// The DAG as [`walk::cell`] walks it.
    pub fn dag(&self) -> walk::Dag<'_> {
        walk::Dag {
            states: self.states(),
            order: &self.order,
            edges: &self.edges,
        }
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

impl Network {
    /// What each layer reads, as [`walk::layers`] takes it.
    pub fn reads(&self) -> Vec<&[usize]> {
        self.layers.iter().map(|l| l.inputs.as_slice()).collect()
    }
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
/// own, depth first. Each library is read once, however many files include it.
pub fn expand_includes(
    sources: &mut Sources,
    path: &Path,
    mut space: raw::SearchSpace,
) -> Result<raw::SearchSpace> {
    let mut into = Gathered {
        stack: vec![canonical(path)],
        ..Gathered::default()
    };
    let includes = std::mem::take(&mut space.include);
    gather(sources, path, &includes, &mut into)?;
    into.ops.append(&mut space.ops.value);
    space.ops.value = into.ops;
    into.cells.append(&mut space.cells.value.0);
    space.cells.value.0 = into.cells;
    Ok(space)
}

/// The deepest chain of includes (a space including a library including another ...).
pub const MAX_INCLUDE_DEPTH: usize = 32;

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

/// What [`gather`] collects: the libraries' ops and cells, the chain of files being read
/// (canonical paths) and every library already read.
#[derive(Default)]
struct Gathered {
    ops: RawOps,
    cells: RawCells,
    stack: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
}

/// Appends the ops and cells of `includes` (paths relative to `from`), depth first; a
/// library already read is skipped, a cycle or a chain deeper than [`MAX_INCLUDE_DEPTH`]
/// is an error at the include that closes it.
fn gather(
    sources: &mut Sources,
    from: &Path,
    includes: &[Spanned<String>],
    into: &mut Gathered,
) -> Result<()> {
    let dir = from.parent().unwrap_or(Path::new(""));
    for inc in includes {
        let path = dir.join(&inc.value);
        let canon = canonical(&path);
        if let Some(i) = into.stack.iter().position(|p| *p == canon) {
            let chain = chain_names(&into.stack[i..], &canon);
            return Err(sources
                .diag(inc.span, format!("include cycle: {chain}"))
                .into());
        }
        if into.seen.contains(&canon) {
            continue;
        }
        if into.stack.len() >= MAX_INCLUDE_DEPTH {
            let chain = chain_names(&into.stack, &canon);
            return Err(sources
                .diag(
                    inc.span,
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files: {chain}"),
                )
                .with_help(
                    "include the libraries from fewer levels (a library may include several)",
                )
                .into());
        }
        let (_, mut lib) = load_file::<raw::Library>(sources, &path, Some(inc.span))?;
        into.stack.push(canon.clone());
        gather(sources, &path, &lib.include, into)?;
        into.stack.pop();
        into.seen.insert(canon);
        into.ops.append(&mut lib.ops);
        into.cells.append(&mut lib.cells.0);
    }
    Ok(())
}

/// `a.ron → b.ron → … → last`, the file names of a chain of includes; long chains keep
/// their first and last three files.
fn chain_names(stack: &[PathBuf], last: &Path) -> String {
    let name = |p: &Path| {
        p.file_name().map_or(p.display().to_string(), |f| {
            f.to_string_lossy().into_owned()
        })
    };
    let mut names: Vec<String> = stack.iter().map(|p| name(p)).collect();
    names.push(name(last));
    if names.len() > 7 {
        let skipped = names.len() - 6;
        names.splice(3..names.len() - 3, [format!("({skipped} more)")]);
    }
    names.join(" → ")
}

/// Compiles and checks a parsed space. Every error points at the file and place at fault.
pub fn compile(sources: &Sources, raw: &raw::SearchSpace, ov: &Overrides) -> Result<Space> {
    let mut c = Compiler {
        src: sources,
        ov,
        ops: Vec::new(),
        cell_names: Vec::new(),
        expansion: Vec::new(),
        work: std::cell::Cell::new(0),
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

/// The largest channel count, image size or class count a spec may declare.
pub const MAX_SIZE: u64 = 1 << 20;

/// The most inputs a cell may take.
pub const MAX_INPUTS: usize = 8;
/// The most intermediate nodes a cell may have.
pub const MAX_NODES: usize = 64;
/// The most layers a network may have (after `Repeat` and `Stage` are expanded).
pub const MAX_LAYERS: usize = 10_000;
/// The most op instances one cell may expand to, motifs expanded in place. Bounds the work
/// of shape inference and counting.
pub const MAX_EXPANSION: u64 = 100_000;

/// The most op instances a whole network may expand to (every cell layer's expansion
/// added up), which bounds the time a check takes.
pub const MAX_WORK: u64 = 5_000_000;

/// The most cells a space may use only as candidates. Counting architectures exactly is
/// exponential in this number.
pub const MAX_MOTIFS: usize = 10;

type R<T> = std::result::Result<T, Box<Diagnostic>>;

struct Compiler<'a> {
    src: &'a Sources,
    ov: &'a Overrides,
    ops: Vec<(String, Op)>,
    cell_names: Vec<String>,
    /// Op instances each cell expands to (motifs in place).
    expansion: Vec<u64>,
    /// Op instances shape inference has gone through so far, bounded by [`MAX_WORK`].
    work: std::cell::Cell<u64>,
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
            if v == 0 || v as u64 > MAX_SIZE {
                return Err(self.err(
                    raw.input.span,
                    format!("{what} must be between 1 and {MAX_SIZE}, got {v}"),
                ));
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
        self.expansion = self.check_expansion(&cells)?;

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
