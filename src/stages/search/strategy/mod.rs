//! Search strategies. Each owns its seeded state; evaluators (`crate::stages::search::evaluator`) are
//! separate.
//!
//! DARTS-family strategies ([`darts`]) train architecture weights inside the supernet.
//! Multi-trial strategies ([`random`], [`evolution`], [`reinforce`], [`local`],
//! [`predictor`]) propose discrete
//! architectures one at a time through [`Strategy`] and learn from their rewards. A
//! discrete architecture is an [`Arch`]: one value per [`Decision`] of the space
//! ([`Decisions::of`]). A multi-trial strategy is a deterministic function of its seed and
//! the rewards it was told, so a search resumes by replaying its record of evaluations
//! (`crate::stages::search::trials`), and no strategy needs a state file of its own.

pub mod evolution;
pub mod local;
pub mod predictor;
pub mod random;
pub mod reinforce;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::space::genotype::{self, Genotype};
use crate::space::{Candidate, Rule, Space};

/// One choice of a discrete architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The candidate of edge `edge` of cell type `cell` (cells whose rule keeps every
    /// edge): a column of the cell's candidates.
    EdgeOp { cell: usize, edge: usize },
    /// Input `k` of node state `node` (cells whose rule keeps `per_node` edges per node): one
    /// of `edges`, the node's incoming edges; the inputs of one node are distinct.
    Input {
        cell: usize,
        node: usize,
        k: usize,
        edges: Vec<usize>,
    },
    /// The op of input `k` of node `node`: one of `allowed`, columns of the cell's
    /// candidates.
    InputOp {
        cell: usize,
        node: usize,
        k: usize,
        allowed: Vec<usize>,
    },
    /// The candidate of searchable layer `slot`.
    Slot { slot: usize },
}

/// The decisions of a space, with each one's number of values.
#[derive(Debug, Clone)]
pub struct Decisions {
    pub list: Vec<(Decision, usize)>,
    /// Groups of `Input` decisions (indices into `list`) that must take distinct values.
    pub distinct: Vec<Vec<usize>>,
    /// The warm start: architectures [`Decisions::random`] returns before any draw.
    initial: Initial,
}

/// A queue of architectures handed out once each, in order. Each clone has its own copy.
#[derive(Debug, Default)]
struct Initial(std::sync::Mutex<std::collections::VecDeque<Arch>>);

impl Initial {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Arch>> {
        // A poisoned lock means another thread panicked mid-pop; the queue is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clone for Initial {
    fn clone(&self) -> Self {
        Initial(std::sync::Mutex::new(self.lock().clone()))
    }
}

/// A discrete architecture: the value of every decision, in [`Decisions::list`] order.
pub use crate::run::trials::Arch;

impl Decisions {
    /// The decisions of `space`: every cell type with architecture weights, by its rule, then
    /// every searchable layer. Motif cells get decisions whether or not an architecture uses
    /// them (the genotype names only those it uses).
    pub fn of(space: &Space) -> Decisions {
        let used = space.used_cells();
        let mut list = Vec::new();
        let mut distinct = Vec::new();
        for (ci, cell) in space.cells.iter().enumerate() {
            if !used[ci] {
                continue;
            }
            match &cell.rule {
                Rule::ArgmaxPerEdge => {
                    for e in 0..cell.edges.len() {
                        list.push((
                            Decision::EdgeOp { cell: ci, edge: e },
                            cell.candidates.len(),
                        ));
                    }
                }
                Rule::TopK { per_node, exclude } => {
                    let allowed: Vec<usize> = (0..cell.candidates.len())
                        .filter(|&k| !matches!(cell.candidates[k], Candidate::Op(o) if exclude.contains(&o)))
                        .collect();
                    for node in cell.inputs..cell.states() {
                        let edges: Vec<usize> = cell.incoming(node).collect();
                        let keep = (*per_node).min(edges.len());
                        let mut group = Vec::new();
                        for k in 0..keep {
                            group.push(list.len());
                            list.push((
                                Decision::Input {
                                    cell: ci,
                                    node,
                                    k,
                                    edges: edges.clone(),
                                },
                                edges.len(),
                            ));
                            list.push((
                                Decision::InputOp {
                                    cell: ci,
                                    node,
                                    k,
                                    allowed: allowed.clone(),
                                },
                                allowed.len(),
                            ));
                        }
                        if group.len() > 1 {
                            distinct.push(group);
                        }
                    }
                }
            }
        }
        for (i, slot) in space.slots.iter().enumerate() {
            list.push((Decision::Slot { slot: i }, slot.candidates.len()));
        }
        Decisions {
            list,
            distinct,
            initial: Initial::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The group of distinct inputs decision `d` belongs to.
    fn group_of(&self, d: usize) -> Option<&[usize]> {
        self.distinct
            .iter()
            .find(|g| g.contains(&d))
            .map(Vec::as_slice)
    }

    /// These decisions with `archs` (valid architectures) queued as the first ones
    /// [`Decisions::random`] returns: the warm start of a strategy built on them.
    pub fn with_initial(self, archs: Vec<Arch>) -> Decisions {
        Decisions {
            initial: Initial(std::sync::Mutex::new(archs.into())),
            ..self
        }
    }

    /// The next queued warm-start architecture, taken off the queue.
    pub fn take_initial(&self) -> Option<Arch> {
        self.initial.lock().pop_front()
    }

    /// The next warm-start architecture while any is queued ([`Decisions::with_initial`],
    /// drawing nothing), then a uniformly random architecture: every decision uniform, the
    /// inputs of a node drawn without replacement.
    pub fn random(&self, rng: &mut ChaCha8Rng) -> Arch {
        if let Some(a) = self.take_initial() {
            return a;
        }
        let mut arch: Arch = self
            .list
            .iter()
            .map(|(_, n)| rng.random_range(0..*n as u32))
            .collect();
        for group in &self.distinct {
            let n = self.list[group[0]].1;
            let mut all: Vec<u32> = (0..n as u32).collect();
            all.shuffle(rng);
            for (&d, v) in group.iter().zip(all) {
                arch[d] = v;
            }
        }
        arch
    }

    /// `arch` with one decision changed to another value: a uniformly chosen decision that
    /// has an alternative, set to a uniformly chosen alternative (for an input, one no other
    /// input of the node uses). `arch` itself when no decision has one.
    pub fn mutate(&self, arch: &Arch, rng: &mut ChaCha8Rng) -> Arch {
        let alternatives = |d: usize| self.alternatives(arch, d);
        let open: Vec<usize> = (0..self.len())
            .filter(|&d| !alternatives(d).is_empty())
            .collect();
        let mut child = arch.clone();
        if open.is_empty() {
            return child;
        }
        let d = open[rng.random_range(0..open.len())];
        let alts = alternatives(d);
        child[d] = alts[rng.random_range(0..alts.len())];
        child
    }

    /// The values decision `d` of `arch` may change to: every other value, for an input
    /// only those no other input of its node uses.
    fn alternatives(&self, arch: &Arch, d: usize) -> Vec<u32> {
        let n = self.list[d].1 as u32;
        let taken: Vec<u32> = match self.group_of(d) {
            Some(g) => g.iter().map(|&o| arch[o]).collect(),
            None => vec![arch[d]],
        };
        (0..n).filter(|v| !taken.contains(v)).collect()
    }

    /// Every architecture one [`Decisions::mutate`] step from `arch`, by decision then
    /// value: `Σ_d |alternatives(d)|` of them, all valid when `arch` is.
    pub fn neighbours(&self, arch: &Arch) -> Vec<Arch> {
        let mut out = Vec::new();
        for d in 0..self.len() {
            for v in self.alternatives(arch, d) {
                let mut a = arch.clone();
                a[d] = v;
                out.push(a);
            }
        }
        out
    }

    /// Whether `arch` has a value in range for every decision and distinct inputs per node.
    pub fn valid(&self, arch: &Arch) -> bool {
        arch.len() == self.len()
            && arch
                .iter()
                .zip(&self.list)
                .all(|(&v, (_, n))| (v as usize) < *n)
            && self.distinct.iter().all(|g| {
                let mut vs: Vec<u32> = g.iter().map(|&d| arch[d]).collect();
                vs.sort_unstable();
                vs.windows(2).all(|w| w[0] != w[1])
            })
    }

    /// The genotype of `arch`, through the space's derivation rules applied to one-hot
    /// weights, so it is exactly what a weight-sharing search with those weights would
    /// derive. A node's inputs are listed by input state, so two encodings of one
    /// architecture give one genotype.
    pub fn genotype(&self, space: &Space, arch: &Arch) -> Genotype {
        let mut cells: Vec<Option<Vec<Vec<f32>>>> = space
            .cells
            .iter()
            .map(|c| Some(vec![vec![0f32; c.candidates.len()]; c.edges.len()]))
            .collect();
        let mut slots: Vec<Vec<f32>> = space
            .slots
            .iter()
            .map(|s| vec![0f32; s.candidates.len()])
            .collect();
        // Input k of a node: (cell, node, k) → edge, then its op.
        let mut inputs: Vec<((usize, usize, usize), usize)> = Vec::new();
        for ((d, _), &v) in self.list.iter().zip(arch) {
            let v = v as usize;
            match d {
                Decision::EdgeOp { cell, edge } => {
                    if let Some(w) = cells[*cell].as_mut() {
                        w[*edge][v] = 1.0;
                    }
                }
                Decision::Input {
                    cell,
                    node,
                    k,
                    edges,
                } => inputs.push(((*cell, *node, *k), edges[v])),
                Decision::InputOp {
                    cell,
                    node,
                    k,
                    allowed,
                } => {
                    if let Some(&(_, e)) = inputs.iter().find(|(key, _)| *key == (*cell, *node, *k))
                        && let Some(w) = cells[*cell].as_mut()
                    {
                        // Earlier edges (lower input states) weigh more: pairs come out in
                        // input order.
                        w[e][allowed[v]] = 1.0 - 1e-3 * e as f32;
                    }
                }
                Decision::Slot { slot } => slots[*slot][v] = 1.0,
            }
        }
        genotype::derive(space, &cells, &slots)
    }

    /// The architecture whose every op decision takes an identity op where it may (else
    /// its first value) and whose inputs are a node's first edges: a reference whose
    /// searchable edges cost (nearly) nothing.
    pub fn identity(&self, space: &Space) -> Arch {
        let is_identity = |cands: &[Candidate], k: usize| {
            matches!(cands.get(k), Some(Candidate::Op(o))
                if matches!(space.ops[*o].1, crate::ops::Op::Identity))
        };
        self.list
            .iter()
            .map(|(d, n)| {
                let pick = match d {
                    Decision::EdgeOp { cell, .. } => {
                        (0..*n).find(|&k| is_identity(&space.cells[*cell].candidates, k))
                    }
                    Decision::InputOp { cell, allowed, .. } => {
                        (0..*n).find(|&k| is_identity(&space.cells[*cell].candidates, allowed[k]))
                    }
                    Decision::Slot { slot } => {
                        (0..*n).find(|&k| is_identity(&space.slots[*slot].candidates, k))
                    }
                    Decision::Input { k, .. } => Some(*k),
                };
                pick.unwrap_or(0) as u32
            })
            .collect()
    }

    /// The number of architectures the decisions encode (inputs of a node counted as
    /// ordered), as f64.
    pub fn encodings(&self) -> f64 {
        self.list.iter().map(|(_, n)| *n as f64).product()
    }
}

/// A multi-trial strategy: proposes one architecture at a time and learns from its reward.
/// Given the same seed and the same rewards, it proposes the same architectures.
///
/// The warm start (a zero-cost prior's picks, [`build`]'s `initial`): a strategy's first
/// random architectures are its decisions' [`Decisions::random`] draws, which hand out the
/// queued architectures first; so they are the random strategy's first proposals,
/// evolution's first population members, local search's and the predictor's first initial
/// architectures, and REINFORCE (which draws from its policy) proposes them first and
/// learns from their rewards as from its own samples.
pub trait Strategy {
    /// The next architecture to evaluate.
    fn ask(&mut self) -> Arch;
    /// The reward of the architecture the last [`Strategy::ask`] returned, or `None` when it
    /// was not evaluated (a constraint rejected it).
    fn tell(&mut self, reward: Option<f64>);
}

/// What a strategy is, for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Random,
    Evolution,
    Reinforce,
    Local,
    Predictor,
}

/// The strategy a pipeline names, seeded with `seed`, whose first proposals are `initial`
/// (the warm start; empty for none).
pub fn build(
    spec: &crate::spec::pipeline::Strategy,
    decisions: Decisions,
    seed: u64,
    initial: Vec<Arch>,
) -> Box<dyn Strategy> {
    use crate::spec::pipeline::Strategy as S;
    let decisions = decisions.with_initial(initial);
    match spec {
        S::Random => Box::new(random::Random::new(decisions, seed)),
        S::Evolution { population, sample } => Box::new(evolution::Evolution::new(
            decisions,
            seed,
            population.value as usize,
            sample.value as usize,
        )),
        S::Reinforce {
            lr,
            baseline_momentum,
        } => Box::new(reinforce::Reinforce::new(
            decisions,
            seed,
            lr.value,
            baseline_momentum.value,
        )),
        S::Local { init } => Box::new(local::Local::new(decisions, seed, init.value as usize)),
        S::Predictor {
            init,
            ensemble,
            batch,
        } => Box::new(predictor::Predictor::new(
            decisions,
            seed,
            init.value as usize,
            ensemble.value as usize,
            batch.value as usize,
        )),
    }
}

/// The RNG of a strategy: seeded from the pipeline's seed and a stream per strategy, so
/// strategies with one seed do not share draws.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Asks `s` for `n` architectures, telling it `f` of each; returns what it asked.
#[cfg(test)]
pub(crate) fn drive(s: &mut dyn Strategy, n: usize, f: impl Fn(&Arch) -> Option<f64>) -> Vec<Arch> {
    (0..n)
        .map(|_| {
            let a = s.ask();
            s.tell(f(&a));
            a
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::space::Overrides;
    use crate::spec::Sources;

    pub(crate) fn space(file: &str) -> Space {
        let mut sources = Sources::default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::space::load(&mut sources, &root.join(file), None, &Overrides::default()).unwrap()
    }

    #[test]
    fn nas_bench_201_has_six_edge_decisions_of_five_ops() {
        let s = space("schemas/nas-bench-201.ron");
        let d = Decisions::of(&s);
        assert_eq!(d.len(), 6);
        assert!(d.list.iter().all(|(_, n)| *n == 5));
        assert_eq!(d.encodings(), 15625.0);
        let g = d.genotype(&s, &vec![3, 3, 4, 1, 3, 1]);
        assert_eq!(
            genotype::nb201_string(&s, &g).unwrap(),
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        );
    }

    #[test]
    fn darts_inputs_are_distinct_and_genotypes_canonical() {
        let s = space("schemas/darts.ron");
        let d = Decisions::of(&s);
        // Two cell types, 4 nodes, 2 inputs each: (input, op) × 2 × 4 × 2.
        assert_eq!(d.len(), 32);
        // Every node of both cells picks 2 distinct inputs.
        assert_eq!(d.distinct.len(), 2 * 4);
        let mut r = rng(1, 0);
        for _ in 0..200 {
            let a = d.random(&mut r);
            assert!(d.valid(&a));
            let m = d.mutate(&a, &mut r);
            assert!(d.valid(&m));
            assert_eq!(a.iter().zip(&m).filter(|(x, y)| x != y).count(), 1);
            // The genotype resolves in the space and names 2 inputs per node.
            let g = d.genotype(&s, &a);
            let src = crate::spec::Source::from_text(std::path::Path::new("g"), g.to_ron());
            g.resolve(&src, &s).unwrap();
            for (_, nodes) in &g.cells.0 {
                for pairs in &nodes.value {
                    assert_eq!(pairs.len(), 2);
                    assert!(pairs[0].value.1 < pairs[1].value.1);
                }
            }
            // Swapping a node's two (input, op) pairs is the same architecture.
            let mut sw = a.clone();
            sw.swap(0, 2);
            sw.swap(1, 3);
            assert_eq!(d.genotype(&s, &sw).to_ron(), g.to_ron());
        }
    }

    #[test]
    fn neighbours_are_every_single_mutation() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        let a = vec![0, 1, 2, 3, 4, 0];
        let n = d.neighbours(&a);
        // 6 edges × 4 other ops, all distinct, each one edit away.
        assert_eq!(n.len(), 24);
        assert_eq!(n.iter().collect::<std::collections::HashSet<_>>().len(), 24);
        assert!(
            n.iter()
                .all(|b| a.iter().zip(b).filter(|(x, y)| x != y).count() == 1)
        );

        let d = Decisions::of(&space("schemas/darts.ron"));
        let mut r = rng(2, 0);
        for _ in 0..50 {
            let a = d.random(&mut r);
            let n = d.neighbours(&a);
            assert!(n.iter().all(|b| d.valid(b)));
            assert!(n.contains(&d.mutate(&a, &mut r)));
        }
    }

    #[test]
    fn chain_spaces_have_one_decision_per_layer() {
        let s = space("schemas/mobilenet-chain.ron");
        let d = Decisions::of(&s);
        assert_eq!(d.len(), s.slots.len());
        let a = d.random(&mut rng(0, 0));
        let g = d.genotype(&s, &a);
        assert_eq!(g.layers.len(), s.slots.len());
    }
}
