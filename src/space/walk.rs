//! The walk every representation of a network shares: the skeleton's layers in order, each
//! fed the values of the layers it reads, and inside a cell its states in topological
//! order, each node made from what its incoming edges give.
//!
//! Owns the wiring: which earlier values a layer receives (the image when it reads none),
//! when a layer's value is let go (after its last reader), which edges feed a node and in
//! what order. What a value is (a tensor, an ONNX value name, a shape) and what a layer, an
//! edge or a node computes belong to the caller's closures. The final network
//! ([`crate::nets::model`]), the weight-sharing network ([`crate::nets::supernet`]), the
//! ONNX export ([`crate::nets::export`]) and shape inference with its counts
//! ([`super::eval`]) all walk through here.

use super::Edge;

/// When [`layers`] lets go of a layer's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every value lives until the walk ends.
    All,
    /// A value is dropped as soon as the last layer that reads it has received it, so memory
    /// holds about one layer's values instead of the whole walk's.
    UntilLastUse,
}

/// A value read before it was computed or after it was let go: wiring that contradicts
/// the walk's contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkError(pub String);

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<WalkError> for String {
    fn from(e: WalkError) -> String {
        e.0
    }
}

/// Walks layers `0..reads.len()` in order and returns the last one's value.
///
/// Layer `i` receives, in order, the values of the layers `reads[i]` lists (which must all
/// be before `i`), or `[image]` when it lists none; `layer(i, inputs)` gives its value.
/// With [`Keep::UntilLastUse`] a value is dropped once its last reader has received it.
///
/// # Errors
/// What `layer` returns, and a [`WalkError`] for no layers or a read of a later layer.
pub fn layers<V: Clone, E: From<WalkError>>(
    reads: &[&[usize]],
    image: V,
    keep: Keep,
    mut layer: impl FnMut(usize, Vec<V>) -> Result<V, E>,
) -> Result<V, E> {
    let last = last_use(reads);
    let mut values: Vec<Option<V>> = Vec::with_capacity(reads.len());
    for (i, from) in reads.iter().enumerate() {
        let inputs = if from.is_empty() {
            vec![image.clone()]
        } else {
            let read = |&j: &usize| {
                values.get(j).cloned().flatten().ok_or_else(|| {
                    WalkError(format!("layer {i} reads layer {j}, which it cannot see"))
                })
            };
            from.iter().map(read).collect::<Result<_, _>>()?
        };
        if keep == Keep::UntilLastUse {
            for &j in from.iter().filter(|&&j| last[j] == i) {
                values[j] = None;
            }
        }
        values.push(Some(layer(i, inputs)?));
    }
    let out = values.pop().flatten();
    Ok(out.ok_or_else(|| WalkError("the network has no layers".into()))?)
}

/// For each layer, the last layer that reads its value (itself when none does).
fn last_use(reads: &[&[usize]]) -> Vec<usize> {
    let n = reads.len();
    let mut last: Vec<usize> = (0..n).collect();
    for (i, from) in reads.iter().enumerate() {
        for &j in from.iter().filter(|&&j| j < n) {
            last[j] = last[j].max(i);
        }
    }
    last
}

/// A cell's DAG as [`cell`] walks it.
#[derive(Debug, Clone, Copy)]
pub struct Dag<'a> {
    /// Number of states: the inputs first, then the intermediate nodes.
    pub states: usize,
    /// Intermediate nodes in an order where every edge goes forward.
    pub order: &'a [usize],
    /// The edges, by edge index.
    pub edges: &'a [Edge],
}

/// Walks a cell and returns the value of every state.
///
/// States `0..inputs.len()` are `inputs`. Then, for each node of `dag.order`: for each edge
/// into it, in edge order, `edge(cx, acc, e, x)` adds edge `e`'s contribution to the node's
/// accumulator `acc` (which starts as `A::default()`), `x` being the value of the edge's
/// source state; then `node(cx, node, acc)` makes the node's value. `cx` is handed to both,
/// for what they both change (an ONNX graph, say).
///
/// # Errors
/// What the closures return, and a [`WalkError`] when an edge reads a state not yet
/// computed or a state is never computed (`order` does not fit the edges).
pub fn cell<C, V, A: Default, E: From<WalkError>>(
    cx: &mut C,
    dag: Dag,
    inputs: Vec<V>,
    mut edge: impl FnMut(&mut C, &mut A, usize, &V) -> Result<(), E>,
    mut node: impl FnMut(&mut C, usize, A) -> Result<V, E>,
) -> Result<Vec<V>, E> {
    let mut states: Vec<Option<V>> = inputs.into_iter().map(Some).collect();
    states.resize_with(dag.states, || None);
    for &n in dag.order {
        let mut acc = A::default();
        for (e, link) in dag.edges.iter().enumerate().filter(|(_, l)| l.to == n) {
            let x = states[link.from].as_ref().ok_or_else(|| {
                WalkError(format!(
                    "edge {e} reads state {} before it is computed",
                    link.from
                ))
            })?;
            edge(cx, &mut acc, e, x)?;
        }
        states[n] = Some(node(cx, n, acc)?);
    }
    let all = states.into_iter().collect::<Option<Vec<V>>>();
    Ok(all.ok_or_else(|| WalkError("a cell state is never computed".into()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are strings naming how they were made; reads follow the skeleton's wiring.
    #[test]
    fn layers_feed_each_layer_what_it_reads() {
        let reads: [&[usize]; 4] = [&[], &[0], &[0, 1], &[2]];
        let mut seen = Vec::new();
        let out = layers::<String, WalkError>(&reads, "x".into(), Keep::All, |i, inputs| {
            seen.push(inputs.clone());
            Ok(format!("L{i}({})", inputs.join(",")))
        })
        .unwrap();
        assert_eq!(seen[0], ["x"]);
        assert_eq!(seen[2], ["L0(x)", "L1(L0(x))"]);
        assert_eq!(out, "L3(L2(L0(x),L1(L0(x))))");
    }

    /// A layer read twice by one reader is dropped only after that reader has it; nothing
    /// is dropped with `Keep::All`.
    #[test]
    fn until_last_use_drops_values_after_their_last_reader() {
        use std::rc::{Rc, Weak};
        let reads: [&[usize]; 4] = [&[], &[0, 0], &[1], &[1, 2]];
        assert_eq!(last_use(&reads), [1, 3, 3, 3]);
        for keep in [Keep::All, Keep::UntilLastUse] {
            let mut made: Vec<Weak<usize>> = Vec::new();
            let out = layers::<Rc<usize>, WalkError>(&reads, Rc::new(1), keep, |i, xs| {
                // Layer 0's value is alive here only while layer 1 reads it (or kept).
                let alive = made.first().is_some_and(|w| w.upgrade().is_some());
                assert_eq!(alive, i == 1 || (i > 1 && keep == Keep::All), "layer {i}");
                let y = Rc::new(xs.iter().map(|x| **x).sum());
                made.push(Rc::downgrade(&y));
                Ok(y)
            });
            assert_eq!(*out.unwrap(), 4);
        }
        let bad: [&[usize]; 2] = [&[], &[1]];
        assert!(layers::<usize, WalkError>(&bad, 1, Keep::All, |_, xs| Ok(xs[0])).is_err());
    }

    /// Node 2 sums inputs 0 and 1, node 3 sums input 0 and node 2; edges are visited by
    /// node, then by edge index.
    #[test]
    fn cell_visits_nodes_in_order_and_edges_by_index() {
        let edges = [
            Edge { from: 0, to: 2 },
            Edge { from: 1, to: 2 },
            Edge { from: 0, to: 3 },
            Edge { from: 2, to: 3 },
        ];
        let dag = Dag {
            states: 4,
            order: &[2, 3],
            edges: &edges,
        };
        let mut calls = Vec::new();
        let states = cell::<_, u32, u32, WalkError>(
            &mut calls,
            dag,
            vec![1, 10],
            |calls, acc, e, x| {
                calls.push(e);
                *acc += x;
                Ok(())
            },
            |_, _, acc| Ok(acc),
        )
        .unwrap();
        assert_eq!(states, [1, 10, 11, 12]);
        assert_eq!(calls, [0, 1, 2, 3]);
    }
}
