//! The latency objective of multi-objective search: how long an architecture's final network
//! takes on ONNX Runtime, measured, cached and predicted.
//!
//! Owns three things:
//! - [`measure`]: the whole network of a space for one architecture, built with seeded random
//!   weights ([`SEED`]; latency does not depend on the values), exported to ONNX in memory
//!   and timed on an ONNX Runtime session following a [`Plan`];
//! - [`Cache`]: one JSON file per measured architecture, named by the hash of its [`Key`]
//!   (space, architecture, nas-pipe version, ONNX Runtime version, CPU model, plan), so that
//!   a re-run never measures the same thing twice;
//! - [`Table`]: the per-op lookup table of a space, measured once: every (op, input shape,
//!   output channels, stride) that occurs on a searchable edge, timed alone, and the fixed
//!   part of the network. [`predict`] adds them up for an architecture without exporting its
//!   network; [`Table::positions`] gives the same costs per (layer, edge, candidate), in the
//!   cell's candidate (alpha-column) order, for a differentiable expected-latency term.
//!
//! Units: milliseconds of wall time around one `Session::run` call (input wrapping and the
//! output copy included), as in [`crate::stages::profile`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, candle_message};
use crate::fsutil::write_atomic;
use crate::nets::export::{self, Metadata, Options};
use crate::nets::model::Model;
use crate::nn::Store;
use crate::ops::{BnMode, IdentityModule, Op, OpModule, Shape};
use crate::run::hash::hash_parts;
use crate::runtime::measure::Latency;
use crate::runtime::{Runtime, Session};
use crate::space::discrete::{Net, NetEdge, NetKind, NetOp};
use crate::space::eval::infer_cell;
use crate::space::genotype::{Architecture, Genotype};
use crate::space::{Candidate, LayerKind, Space};

/// Version of the cache entry and table layouts; bumped when a field changes meaning. It is
/// part of every [`Key`] hash, so entries of another layout are never read.
pub const SCHEMA_VERSION: u32 = 1;

/// The seed of the random weights of every measured network and op.
pub const SEED: u64 = 0;

/// How one latency is measured. Every field of a plan that reaches ONNX Runtime must be ≥ 1
/// (`warmup` may be 0); [`Plan::check`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// Images per run.
    pub batch: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Timed runs; the latency is their median ([`Latency::p50`]).
    pub runs: usize,
}

impl From<crate::spec::pipeline::Timing> for Plan {
    fn from(t: crate::spec::pipeline::Timing) -> Plan {
        Plan {
            batch: t.batch_size as usize,
            threads: t.threads as usize,
            warmup: t.warmup as usize,
            runs: t.runs as usize,
        }
    }
}

impl Default for Plan {
    /// Batch 1 on 1 thread (the latency a search objective usually means), 10 warm-up and
    /// 50 timed runs.
    fn default() -> Self {
        Plan {
            batch: 1,
            threads: 1,
            warmup: 10,
            runs: 50,
        }
    }
}

impl Plan {
    /// An error naming the first field out of range.
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("batch", self.batch),
            ("threads", self.threads),
            ("runs", self.runs),
        ] {
            if v == 0 {
                return Err(Error::Input(format!(
                    "latency plan: {name} must be at least 1"
                )));
            }
        }
        Ok(())
    }
}

// ---- Measuring ----

/// The latency of `arch`'s final network in `space` (see [`measure_net`]).
pub fn measure(
    rt: &'static Runtime,
    space: &Space,
    arch: &Architecture,
    plan: &Plan,
) -> Result<Latency> {
    measure_net(rt, &space.build(arch), plan)
}

/// Builds `net` with weights drawn from [`SEED`], exports it (BN folded, the default
/// options) and times it with [`measure_onnx`].
pub fn measure_net(rt: &'static Runtime, net: &Net, plan: &Plan) -> Result<Latency> {
    let model = Model::new(net, &Device::Cpu, SEED, false).map_err(|e| {
        Error::Export(format!(
            "building the {} network: {}",
            net.space,
            candle_message(&e)
        ))
    })?;
    let c = net.input.channels as usize;
    let meta = Metadata {
        mean: vec![0.0; c],
        std: vec![1.0; c],
        ..Metadata::default()
    };
    let bytes = export::export(&model, &meta, &Options::default())?;
    let size = net.input.size as u64;
    let sample = Shape {
        c: c as u64,
        h: size,
        w: size,
    };
    measure_onnx(rt, &bytes, sample, plan)
}

/// Times an ONNX model held in memory: a session with `plan.threads` intra-op threads,
/// `plan.warmup` untimed runs, then `plan.runs` timed ones on the same deterministic input.
///
/// # Shapes
/// The model's one input is fed [`plan.batch`, `sample.c`, `sample.h`, `sample.w`].
pub fn measure_onnx(
    rt: &'static Runtime,
    bytes: &[u8],
    sample: Shape,
    plan: &Plan,
) -> Result<Latency> {
    plan.check()?;
    let mut session = Session::from_bytes(rt, bytes, plan.threads)?;
    let shape = [
        plan.batch,
        sample.c as usize,
        sample.h as usize,
        sample.w as usize,
    ];
    let input = crate::runtime::measure::pseudo_random(shape.iter().product());
    for _ in 0..plan.warmup {
        session.run(&input, &shape)?;
    }
    let mut ms = Vec::with_capacity(plan.runs);
    for _ in 0..plan.runs {
        let t = Instant::now();
        session.run(&input, &shape)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Latency::of(&ms))
}

// ---- The cache ----

/// Everything a measured latency depends on. Two measurements with equal keys are taken to
/// be the same; [`Key::hash`] names the cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The nas-pipe version: the exporter decides which nodes ONNX Runtime runs.
    pub nas_pipe: String,
    /// [`space_hash`] of the space the architecture lives in.
    pub space: String,
    /// [`arch_hash`] of the architecture.
    pub arch: String,
    /// The ONNX Runtime version string (`1.32.0`).
    pub ort_version: String,
    /// The CPU model (`Machine::current().cpu`).
    pub cpu: String,
    pub plan: Plan,
}

impl Key {
    /// The key of `genotype` in the space hashed as `space` (a [`space_hash`]).
    pub fn new(space: &str, genotype: &Genotype, ort_version: &str, cpu: &str, plan: Plan) -> Key {
        Key {
            nas_pipe: env!("CARGO_PKG_VERSION").to_string(),
            space: space.to_string(),
            arch: arch_hash(genotype),
            ort_version: ort_version.to_string(),
            cpu: cpu.to_string(),
            plan,
        }
    }

    /// A blake3 hex digest of the layout version and every field.
    pub fn hash(&self) -> String {
        let plan = self.plan;
        let plan = format!(
            "{} {} {} {}",
            plan.batch, plan.threads, plan.warmup, plan.runs
        );
        hash_parts(&[
            &SCHEMA_VERSION.to_le_bytes(),
            self.nas_pipe.as_bytes(),
            self.space.as_bytes(),
            self.arch.as_bytes(),
            self.ort_version.as_bytes(),
            self.cpu.as_bytes(),
            plan.as_bytes(),
        ])
    }
}

/// A blake3 hex digest of the genotype's RON text ([`Genotype::to_ron`]).
pub fn arch_hash(genotype: &Genotype) -> String {
    hash_parts(&[genotype.to_ron().as_bytes()])
}

/// A blake3 hex digest of a space: the text of every file it was read from (`texts`, the
/// space and its libraries, as a pipeline's `space_texts`) and its compiled skeleton (input,
/// layers and their shapes), so that channel or depth overrides give another hash.
pub fn space_hash(texts: &[String], space: &Space) -> String {
    let mut skeleton = format!("{:?}\n", space.input);
    for l in &space.network.layers {
        let shapes: Vec<String> = l.input_shapes.iter().map(Shape::to_string).collect();
        skeleton += &format!(
            "{:?} {:?} [{}] -> {}\n",
            l.kind,
            l.inputs,
            shapes.join(", "),
            l.output
        );
    }
    let mut parts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    parts.push(skeleton.as_bytes());
    hash_parts(&parts)
}

/// One cache file: `<dir>/<key hash>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    pub key: Key,
    pub latency_ms: Latency,
}

/// Where a latency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache.
    Cached,
    /// Measured now (and written to the cache).
    Measured,
}

/// Measured latencies, one JSON file per [`Key`] in one folder, each written atomically.
///
/// A file that exists but does not parse, or holds another key or layout, is an error
/// naming it ([`Error::Data`]), not a miss: files are only ever written whole, so such a
/// file was edited or damaged by something else, and measuring over it would hide that.
/// Delete it to measure again.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s latency.
    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.json", key.hash()))
    }

    /// `key`'s latency, `None` when it was never measured.
    pub fn get(&self, key: &Key) -> Result<Option<Latency>> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let bad = |message: String| Error::Data {
            path: path.clone(),
            message: format!("{message}; delete the file to measure again"),
        };
        let entry: Entry = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a latency cache entry: {e}")))?;
        if entry.version != SCHEMA_VERSION {
            return Err(bad(format!(
                "latency cache entry of layout version {}, this build reads {SCHEMA_VERSION}",
                entry.version
            )));
        }
        if entry.key != *key {
            return Err(bad("the latency cache entry holds another key".into()));
        }
        Ok(Some(entry.latency_ms))
    }

    /// Writes `key`'s latency; returns the file.
    pub fn put(&self, key: &Key, latency: &Latency) -> Result<PathBuf> {
        let path = self.path(key);
        let entry = Entry {
            version: SCHEMA_VERSION,
            key: key.clone(),
            latency_ms: *latency,
        };
        let json = serde_json::to_string_pretty(&entry)
            .map_err(|e| Error::Input(format!("cannot serialise a latency cache entry: {e}")))?;
        write_atomic(&path, format!("{json}\n").as_bytes())?;
        Ok(path)
    }

    /// `key`'s cached latency, or `measure()`'s, which is then cached.
    pub fn get_or_measure(
        &self,
        key: &Key,
        measure: impl FnOnce() -> Result<Latency>,
    ) -> Result<(Latency, Source)> {
        if let Some(l) = self.get(key)? {
            return Ok((l, Source::Cached));
        }
        let l = measure()?;
        self.put(key, &l)?;
        Ok((l, Source::Measured))
    }
}

// ---- The per-op table ----

/// An op where it is used: what its latency alone depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpKey {
    pub op: Op,
    /// Input [C, H, W].
    pub input: [u64; 3],
    pub c_out: u64,
    pub stride: u32,
}

impl OpKey {
    fn new(op: Op, input: Shape, c_out: u64, stride: u32) -> OpKey {
        OpKey {
            op,
            input: [input.c, input.h, input.w],
            c_out,
            stride,
        }
    }

    fn input_shape(&self) -> Shape {
        let [c, h, w] = self.input;
        Shape { c, h, w }
    }

    /// The op emits no node in an exported network (`Zero`, and `Identity` at stride 1), so
    /// it costs 0 and is not measured.
    pub fn is_free(&self) -> bool {
        matches!(self.op, Op::Zero) || (matches!(self.op, Op::Identity) && self.stride == 1)
    }
}

/// One measured op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpCost {
    pub key: OpKey,
    /// What the op adds to a network: `alone_ms − overhead_ms`, at least 0.
    pub ms: f64,
    /// The median latency of the op exported alone ([`export::export_op`]).
    pub alone_ms: f64,
    /// The median latency of an identity model of the same input shape: the cost of a
    /// session run itself (input wrap, output copy), which a network pays once.
    pub overhead_ms: f64,
}

/// One searchable position of a space: a cell edge of one layer, or a searchable layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The layer index in the network.
    pub layer: usize,
    /// The edge index in its cell type (the alpha row), or the searchable layer's slot.
    pub edge: usize,
    /// Candidate names, in the cell's candidate (alpha-column) order.
    pub candidates: Vec<String>,
    /// What each candidate adds to the network's latency (ms), in the same order.
    pub ms: Vec<f64>,
}

/// A space's per-op latency table: measured once per space, runtime, machine and plan.
///
/// The latency of an architecture is predicted as `fixed_ms` plus the [`OpCost::ms`] of the
/// op on each of its searchable edges ([`predict`]). `fixed_ms` is the measured latency of a
/// reference network of the space minus its own edges' op costs: the stem, residual blocks,
/// cell preprocessing, node sums and head, and one session run's overhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// The space's name.
    pub space: String,
    pub ort_version: String,
    pub cpu: String,
    pub plan: Plan,
    /// The reference architecture's genotype (RON) and measured latency.
    pub reference: String,
    pub reference_ms: f64,
    pub fixed_ms: f64,
    /// Every op that occurs on a searchable edge, in first-occurrence order; free ops
    /// ([`OpKey::is_free`]) are listed with 0.
    pub ops: Vec<OpCost>,
    /// Every searchable position, in network order.
    pub positions: Vec<Position>,
    /// [`Table::space_key`] of the space measured (empty in tables written before it).
    #[serde(default)]
    pub space_key: String,
}

impl Table {
    /// Measures the table of `space`: each op alone at every place it occurs, an identity
    /// model per input shape for the overhead, and the whole network of `reference` (for
    /// NAS-Bench-201 the all-`skip_connect` cell: every layer alive, no op cost) for the
    /// fixed part. `on_op` sees each op cost as it is measured.
    ///
    /// # Errors
    /// A space whose edges may choose a motif (a cell as candidate), and whatever measuring
    /// fails with.
    pub fn measure(
        rt: &'static Runtime,
        space: &Space,
        reference: (&Genotype, &Architecture),
        plan: &Plan,
        mut on_op: impl FnMut(&OpCost),
    ) -> Result<Table> {
        let places = places(space)?;
        let mut ops: Vec<OpCost> = Vec::new();
        let mut overheads: Vec<([u64; 3], f64)> = Vec::new();
        for place in &places {
            for (_, key) in &place.candidates {
                if ops.iter().any(|o| o.key == *key) {
                    continue;
                }
                let cost = if key.is_free() {
                    OpCost {
                        key: *key,
                        ms: 0.0,
                        alone_ms: 0.0,
                        overhead_ms: 0.0,
                    }
                } else {
                    let overhead_ms = match overheads.iter().find(|(s, _)| *s == key.input) {
                        Some((_, o)) => *o,
                        None => {
                            let o = measure_alone(
                                rt,
                                &OpModule::Identity(IdentityModule::Identity),
                                key.input_shape(),
                                plan,
                            )?;
                            overheads.push((key.input, o));
                            o
                        }
                    };
                    let alone_ms = measure_op(rt, key, plan)?;
                    OpCost {
                        key: *key,
                        ms: (alone_ms - overhead_ms).max(0.0),
                        alone_ms,
                        overhead_ms,
                    }
                };
                on_op(&cost);
                ops.push(cost);
            }
        }
        let ms_of = |k: &OpKey| ops.iter().find(|o| o.key == *k).map_or(0.0, |o| o.ms);
        let positions = places
            .iter()
            .map(|p| Position {
                layer: p.layer,
                edge: p.edge,
                candidates: p.candidates.iter().map(|(n, _)| n.clone()).collect(),
                ms: p.candidates.iter().map(|(_, k)| ms_of(k)).collect(),
            })
            .collect();
        let (genotype, resolved) = reference;
        let net = space.build(resolved);
        let reference_ms = measure_net(rt, &net, plan)?.p50;
        let mut table = Table {
            version: SCHEMA_VERSION,
            space: space.name.clone(),
            ort_version: rt.version.clone(),
            cpu: crate::runtime::measure::Machine::current().cpu,
            plan: *plan,
            reference: genotype.to_ron(),
            reference_ms,
            fixed_ms: 0.0,
            ops,
            positions,
            space_key: Table::space_key(space),
        };
        table.fixed_ms = reference_ms - edges_ms(&table, &net)?;
        Ok(table)
    }

    /// A hash of what the table depends on in a space: its ops, each cell's candidates, and
    /// the compiled layers with their shapes.
    pub fn space_key(space: &Space) -> String {
        let vocabulary = format!(
            "{:?} {:?} {:?}",
            space.ops,
            space
                .cells
                .iter()
                .map(|c| &c.candidates)
                .collect::<Vec<_>>(),
            space
                .slots
                .iter()
                .map(|s| &s.candidates)
                .collect::<Vec<_>>()
        );
        space_hash(&[vocabulary], space)
    }

    /// The table of `space` for `plan` on this machine and runtime: read from `path` when it
    /// was measured for them, else measured against the architecture that takes an identity
    /// op wherever it may ([`crate::stages::search::strategy::Decisions::identity`]) and written to `path`.
    pub fn for_space(
        rt: &'static Runtime,
        space: &Space,
        plan: &Plan,
        path: &Path,
    ) -> Result<Table> {
        let cpu = crate::runtime::measure::Machine::current().cpu;
        if let Ok(t) = Table::load(path)
            && t.space_key == Table::space_key(space)
            && t.ort_version == rt.version
            && t.cpu == cpu
            && t.plan == *plan
        {
            return Ok(t);
        }
        let d = crate::stages::search::strategy::Decisions::of(space);
        let c = crate::stages::search::evaluator::Candidate::new(space, &d, d.identity(space))?;
        let t = Table::measure(rt, space, (&c.genotype, &c.resolved), plan, |_| {})?;
        t.save(path)?;
        Ok(t)
    }

    /// What `key` adds to a network, `None` when the table does not hold it.
    pub fn op_ms(&self, key: &OpKey) -> Option<f64> {
        if key.is_free() {
            return Some(0.0);
        }
        self.ops.iter().find(|o| o.key == *key).map(|o| o.ms)
    }

    /// The costs of edge `edge` of layer `layer` (a searchable layer: `edge` is its slot).
    pub fn position(&self, layer: usize, edge: usize) -> Option<&Position> {
        self.positions
            .iter()
            .find(|p| p.layer == layer && p.edge == edge)
    }

    /// Writes the table as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Input(format!("cannot serialise the latency table: {e}")))?;
        write_atomic(path, format!("{json}\n").as_bytes())
    }

    /// Reads a table [`Table::save`] wrote. A file that does not parse or has another layout
    /// version is an [`Error::Data`] naming it.
    pub fn load(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| Error::Data {
            path: path.to_path_buf(),
            message,
        };
        let t: Table =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a latency table: {e}")))?;
        if t.version != SCHEMA_VERSION {
            return Err(bad(format!(
                "latency table of layout version {}, this build reads {SCHEMA_VERSION}",
                t.version
            )));
        }
        Ok(t)
    }
}

/// The predicted latency (ms) of `net`: the table's fixed part plus the cost of the op on
/// each searchable edge. No export, no runtime.
///
/// # Errors
/// An edge whose op the table does not hold (`net` is not of the table's space, or of the
/// space with other channels or input size), or a motif on an edge.
pub fn predict(table: &Table, net: &Net) -> Result<f64> {
    if net.space != table.space {
        return Err(Error::Input(format!(
            "a latency table of space \"{}\" cannot predict a network of \"{}\"",
            table.space, net.space
        )));
    }
    Ok(table.fixed_ms + edges_ms(table, net)?)
}

/// The summed op costs of `net`'s searchable edges.
fn edges_ms(table: &Table, net: &Net) -> Result<f64> {
    let mut sum = 0.0;
    for (i, l) in net.layers.iter().enumerate() {
        let edges: Vec<&NetEdge> = match &l.kind {
            NetKind::Cell(c) => c.graph.edge_weights().collect(),
            NetKind::Choice { choice, .. } => vec![choice],
            _ => continue,
        };
        for e in edges {
            let NetOp::Op(op) = &e.op else {
                return Err(motif(i, &e.name));
            };
            let key = OpKey::new(*op, e.input, e.output.c, e.stride);
            sum += table.op_ms(&key).ok_or_else(|| {
                Error::Input(format!(
                    "layer {i}, edge {} ({}): the latency table has no {:?} on {} to {} channels at stride {}",
                    e.index, e.name, op, e.input, e.output.c, e.stride
                ))
            })?;
        }
    }
    Ok(sum)
}

fn motif(layer: usize, name: &str) -> Error {
    Error::Input(format!(
        "layer {layer}: candidate \"{name}\" is a cell; the latency table covers ops only"
    ))
}

/// A searchable position with every candidate's op where it would run.
struct Place {
    layer: usize,
    edge: usize,
    candidates: Vec<(String, OpKey)>,
}

/// Every searchable position of `space`'s skeleton, in network order.
fn places(space: &Space) -> Result<Vec<Place>> {
    let mut out = Vec::new();
    let keys = |layer: usize, cands: &[Candidate], input: Shape, c_out: u64, stride: u32| {
        cands
            .iter()
            .map(|&c| {
                let name = space.candidate_name(c).to_string();
                match c {
                    Candidate::Op(o) => {
                        Ok((name, OpKey::new(space.ops[o].1, input, c_out, stride)))
                    }
                    Candidate::Cell(_) => Err(motif(layer, &name)),
                }
            })
            .collect::<Result<Vec<_>>>()
    };
    for (i, l) in space.network.layers.iter().enumerate() {
        match &l.kind {
            LayerKind::Cell {
                cell,
                width,
                stride,
                ..
            } => {
                let states = l.shapes(BnMode::FINAL).map_err(Error::Input)?.states;
                let shapes = infer_cell(&space.ops, &space.cells, *cell, &states, *width, *stride)
                    .map_err(Error::Input)?;
                let ct = &space.cells[*cell];
                for (e, edge) in ct.edges.iter().enumerate() {
                    let s = if edge.from < ct.inputs { *stride } else { 1 };
                    out.push(Place {
                        layer: i,
                        edge: e,
                        candidates: keys(i, &ct.candidates, shapes[edge.from], *width, s)?,
                    });
                }
            }
            LayerKind::Choice { slot, stride } => out.push(Place {
                layer: i,
                edge: *slot,
                candidates: keys(
                    i,
                    &space.slots[*slot].candidates,
                    l.input_shapes[0],
                    l.output.c,
                    *stride,
                )?,
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The median latency of `key`'s op alone.
fn measure_op(rt: &'static Runtime, key: &OpKey, plan: &Plan) -> Result<f64> {
    let store = Store::new(&Device::Cpu, SEED);
    let m = key
        .op
        .build(
            &store.root().pp("op"),
            key.input[0] as usize,
            key.c_out as usize,
            key.stride as usize,
            BnMode::FINAL,
        )
        .map_err(|e| Error::Export(format!("building {:?}: {}", key.op, candle_message(&e))))?;
    let bytes = export::export_op(&m, &store, key.input_shape(), &Options::default())?;
    Ok(measure_onnx(rt, &bytes, key.input_shape(), plan)?.p50)
}

/// The median latency of a parameterless `m` alone.
fn measure_alone(rt: &'static Runtime, m: &OpModule, input: Shape, plan: &Plan) -> Result<f64> {
    let store = Store::new(&Device::Cpu, SEED);
    let bytes = export::export_op(m, &store, input, &Options::default())?;
    Ok(measure_onnx(rt, &bytes, input, plan)?.p50)
}

// ---- Rank correlation ----

/// Spearman's rank correlation (NaN when undefined) and the ranks it compares, shared with
/// the multi-trial record's proxy correlations.
pub use crate::run::trials::{rank_correlation as spearman, ranks};

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::space::Overrides;
    use crate::spec::{Sources, Span};

    const NB201: &str = "schemas/nas-bench-201.ron";
    const EXAMPLE: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";
    const ALL_SKIP: &str = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|";

    /// NAS-Bench-201 with `channels` and `depth` cells per stage, and its files' texts.
    fn nb201(channels: u32, depth: u32) -> (Space, Vec<String>) {
        let mut sources = Sources::default();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ov = Overrides {
            input: None,
            channels: Some((channels, Span::default())),
            layers: Some((depth, Span::default())),
        };
        let s = crate::space::load(&mut sources, &root.join(NB201), None, &ov).unwrap();
        let texts = sources.files.iter().map(|f| f.text.clone()).collect();
        (s, texts)
    }

    fn arch(s: &Space, g: &str) -> (Genotype, Architecture) {
        let (src, genotype) = Genotype::from_arg(g, s).unwrap();
        let r = genotype.resolve(&src, s).unwrap();
        (genotype, r)
    }

    fn key(s: &Space, texts: &[String], g: &str, plan: Plan) -> Key {
        Key::new(
            &space_hash(texts, s),
            &arch(s, g).0,
            "1.32.0",
            "Test CPU",
            plan,
        )
    }

    fn tempdir(name: &str) -> crate::fsutil::TempDir {
        crate::fsutil::TempDir::new(&format!("latency-{name}"))
    }

    /// ONNX Runtime, or `None` with a note on stderr that `test` is skipped; a library named
    /// by ORT_DYLIB_PATH must load (as `ort_runtime` in tests/tests.rs).
    fn ort(test: &str) -> Option<&'static Runtime> {
        match crate::runtime::load(None) {
            Ok(rt) => Some(rt),
            Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some() => {
                panic!("ORT_DYLIB_PATH is set but ONNX Runtime does not load: {e}")
            }
            Err(e) => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: no ONNX Runtime library; bash scripts/test.sh installs one.\n{e}"
                );
                None
            }
        }
    }

    #[test]
    fn latency_cache_hit_returns_the_stored_value_without_measuring() {
        let (s, texts) = nb201(16, 5);
        let tmp = tempdir("hit");
        let cache = Cache::new(tmp.join("cache"));
        let k = key(&s, &texts, EXAMPLE, Plan::default());
        let calls = Cell::new(0);
        let measured = Latency::of(&[1.5, 2.0, 2.5]);
        let run = || {
            calls.set(calls.get() + 1);
            Ok(measured)
        };
        let (first, from) = cache.get_or_measure(&k, run).unwrap();
        assert_eq!((first, from, calls.get()), (measured, Source::Measured, 1));
        let (again, from) = cache.get_or_measure(&k, run).unwrap();
        assert_eq!((again, from, calls.get()), (measured, Source::Cached, 1));
        // A fresh handle on the same folder reads the file.
        let (third, from) = Cache::new(cache.dir()).get_or_measure(&k, run).unwrap();
        assert_eq!((third, from, calls.get()), (measured, Source::Cached, 1));
        let leftovers: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn latency_keys_differ_when_anything_measured_differs() {
        let (s, texts) = nb201(16, 5);
        let base = key(&s, &texts, EXAMPLE, Plan::default());
        // Stable: the same inputs give the same hash.
        assert_eq!(
            base.hash(),
            key(&s, &texts, EXAMPLE, Plan::default()).hash()
        );
        let other_arch = key(&s, &texts, ALL_SKIP, Plan::default());
        let threads = key(
            &s,
            &texts,
            EXAMPLE,
            Plan {
                threads: 2,
                ..Plan::default()
            },
        );
        let (s8, texts8) = nb201(8, 5);
        let narrower = key(&s8, &texts8, EXAMPLE, Plan::default());
        let mut cpu = base.clone();
        cpu.cpu = "Other CPU".into();
        let mut ort = base.clone();
        ort.ort_version = "1.33.0".into();
        let hashes: std::collections::HashSet<String> =
            [&base, &other_arch, &threads, &narrower, &cpu, &ort]
                .iter()
                .map(|k| k.hash())
                .collect();
        assert_eq!(hashes.len(), 6);
        assert_ne!(base.arch, other_arch.arch);
        assert_ne!(base.space, narrower.space);
    }

    #[test]
    fn a_corrupt_latency_cache_entry_is_an_error_naming_the_file() {
        let (s, texts) = nb201(16, 5);
        let tmp = tempdir("corrupt");
        let cache = Cache::new(tmp.join("cache"));
        let k = key(&s, &texts, EXAMPLE, Plan::default());
        std::fs::create_dir_all(cache.dir()).unwrap();
        std::fs::write(cache.path(&k), "{ not json").unwrap();
        let e = cache
            .get_or_measure(&k, || panic!("measured over a corrupt entry"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: not a latency cache entry: ",
                cache.path(&k).display()
            )),
            "{msg}"
        );
        assert!(msg.ends_with("; delete the file to measure again"), "{msg}");
        // An entry moved under another key's name.
        let other = key(&s, &texts, ALL_SKIP, Plan::default());
        let written = cache.put(&other, &Latency::of(&[1.0])).unwrap();
        std::fs::rename(written, cache.path(&k)).unwrap();
        assert_eq!(
            cache.get(&k).unwrap_err().to_string(),
            format!(
                "{}: the latency cache entry holds another key; delete the file to measure again",
                cache.path(&k).display()
            )
        );
    }

    /// A table with every op of NB201 (C = 8, 1 cell per stage) at a made-up cost.
    fn made_up_table(s: &Space) -> Table {
        let places = places(s).unwrap();
        let mut ops: Vec<OpCost> = Vec::new();
        for (_, k) in places.iter().flat_map(|p| &p.candidates) {
            if !ops.iter().any(|o| o.key == *k) {
                let ms = if k.is_free() {
                    0.0
                } else {
                    0.01 * (ops.len() + 1) as f64
                };
                ops.push(OpCost {
                    key: *k,
                    ms,
                    alone_ms: ms,
                    overhead_ms: 0.0,
                });
            }
        }
        Table {
            version: SCHEMA_VERSION,
            space: s.name.clone(),
            ort_version: "1.32.0".into(),
            cpu: "Test CPU".into(),
            plan: Plan::default(),
            reference: String::new(),
            reference_ms: 1.0,
            fixed_ms: 1.0,
            ops,
            positions: Vec::new(),
            space_key: Table::space_key(s),
        }
    }

    #[test]
    fn the_latency_table_covers_every_nb201_edge_and_candidate() {
        let (s, _) = nb201(8, 1);
        let p = places(&s).unwrap();
        // 3 cells of 6 edges, 5 candidates each.
        assert_eq!(p.len(), 18);
        assert!(p.iter().all(|p| p.candidates.len() == 5));
        let names: Vec<&str> = p[0].candidates.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "none",
                "skip_connect",
                "nor_conv_1x1",
                "nor_conv_3x3",
                "avg_pool_3x3"
            ]
        );
        // 5 ops at three shapes, all stride 1.
        let mut keys: Vec<OpKey> = p
            .iter()
            .flat_map(|p| p.candidates.iter().map(|c| c.1))
            .collect();
        keys.sort_by_key(|k| format!("{k:?}"));
        keys.dedup();
        assert_eq!(keys.len(), 15);
        let inputs: std::collections::BTreeSet<[u64; 3]> = keys.iter().map(|k| k.input).collect();
        assert_eq!(
            inputs.into_iter().collect::<Vec<_>>(),
            [[8, 32, 32], [16, 16, 16], [32, 8, 8]]
        );
        assert!(keys.iter().all(|k| k.stride == 1 && k.c_out == k.input[0]));
    }

    #[test]
    fn predict_adds_the_edge_costs_to_the_fixed_part() {
        let (s, _) = nb201(8, 1);
        let t = made_up_table(&s);
        let zeros = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|";
        assert_eq!(predict(&t, &s.build(&arch(&s, zeros).1)).unwrap(), 1.0);
        assert_eq!(predict(&t, &s.build(&arch(&s, ALL_SKIP).1)).unwrap(), 1.0);
        let one = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|";
        let conv3 = |input: [u64; 3]| {
            t.op_ms(&OpKey {
                op: Op::ReluConvBn { kernel: 3 },
                input,
                c_out: input[0],
                stride: 1,
            })
            .unwrap()
        };
        let want = 1.0 + conv3([8, 32, 32]) + conv3([16, 16, 16]) + conv3([32, 8, 8]);
        assert!((predict(&t, &s.build(&arch(&s, one).1)).unwrap() - want).abs() < 1e-12);
        // A network of another width is refused, naming the edge.
        let (s16, _) = nb201(16, 1);
        let e = predict(&t, &s16.build(&arch(&s16, one).1))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("layer 1, edge 0 (nor_conv_3x3): the latency table has no"),
            "{e}"
        );
    }

    #[test]
    fn spearman_uses_average_ranks_for_ties() {
        assert_eq!(ranks(&[10.0, 30.0, 20.0, 30.0]), [1.0, 3.5, 2.0, 3.5]);
        // Ranks [1..5] and [1, 2, 3.5, 5, 3.5]: Σdxdy = 8, Σdx² = 10, Σdy² = 9.5 (scipy's
        // spearmanr gives 0.8207826816681233).
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]);
        assert!((r - 8.0 / 95f64.sqrt()).abs() < 1e-12, "{r}");
        assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]) + 1.0).abs() < 1e-12);
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_nan());
        assert!(spearman(&[1.0, 2.0], &[3.0, 3.0]).is_nan());
    }

    /// With ONNX Runtime: a measured table, the monotonicity of its prediction, and a
    /// whole-network measurement cached once.
    #[test]
    fn measured_latency_table_predicts_more_for_a_conv_than_for_none() {
        let Some(rt) = ort("measured_latency_table_predicts_more_for_a_conv_than_for_none") else {
            return;
        };
        let (s, texts) = nb201(8, 1);
        let plan = Plan {
            batch: 1,
            threads: 1,
            warmup: 2,
            runs: 5,
        };
        let (g, r) = arch(&s, ALL_SKIP);
        let t = Table::measure(rt, &s, (&g, &r), &plan, |_| {}).unwrap();
        assert_eq!(t.positions.len(), 18);
        assert!(t.ops.iter().all(|o| o.ms >= 0.0 && o.ms.is_finite()));
        assert!(t.reference_ms > 0.0);
        let p = t.position(1, 0).unwrap();
        assert_eq!(p.ms[0], 0.0); // none
        assert_eq!(p.ms[1], 0.0); // skip_connect
        // Replacing `none` by `nor_conv_3x3` on each edge in turn never lowers the prediction.
        let mut edges = vec!["none"; 6];
        let nb = |e: &[&str]| {
            format!(
                "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|",
                e[0], e[1], e[2], e[3], e[4], e[5]
            )
        };
        let mut last = predict(&t, &s.build(&arch(&s, &nb(&edges)).1)).unwrap();
        for i in 0..6 {
            edges[i] = "nor_conv_3x3";
            let now = predict(&t, &s.build(&arch(&s, &nb(&edges)).1)).unwrap();
            assert!(now >= last, "edge {i}: {now} < {last}");
            last = now;
        }
        // A saved table reads back equal.
        let dir = tempdir("table");
        t.save(&dir.join("table.json")).unwrap();
        assert_eq!(Table::load(&dir.join("table.json")).unwrap(), t);

        let cache = Cache::new(dir.join("cache"));
        let (g, r) = arch(&s, EXAMPLE);
        let k = Key::new(&space_hash(&texts, &s), &g, &rt.version, "Test CPU", plan);
        let (l, from) = cache
            .get_or_measure(&k, || measure(rt, &s, &r, &plan))
            .unwrap();
        assert_eq!(from, Source::Measured);
        assert!(l.p50 > 0.0 && l.min <= l.p50 && l.p50 <= l.max);
        let (again, from) = cache
            .get_or_measure(&k, || panic!("measured twice"))
            .unwrap();
        assert_eq!((again, from), (l, Source::Cached));
    }
}
