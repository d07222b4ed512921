//! Compiling one cell type: its DAG (petgraph), the checks on it (edges in range, cycles,
//! nodes with no input, states that reach no output, the derivation rule's arity), and the
//! check that no cell contains itself through its candidates.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use super::{
    Candidate, CellType, Compiler, Edge, MAX_EXPANSION, MAX_INPUTS, MAX_NODES, MAX_WORK, R, Rule,
    plural,
};
use crate::spec::space::{self as raw, Edges, Output};
use crate::spec::{Span, Spanned};

impl Compiler<'_> {
    pub(super) fn cell(
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
        for (v, field, max) in [
            (&cell.inputs, "inputs", MAX_INPUTS),
            (&cell.nodes, "nodes", MAX_NODES),
        ] {
            if v.value as usize > max {
                return Err(self.err(
                    v.span,
                    format!(
                        "{whose}: `{field}` is {}, more than the {max} a cell may have",
                        v.value
                    ),
                ));
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

    pub(super) fn check_motif_cycles(&self, raw: &raw::SearchSpace, cells: &[CellType]) -> R<()> {
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

    /// Checks that no cell expands (motifs in place) to more than [`MAX_EXPANSION`] op
    /// instances. Cells must be free of containment cycles.
    pub(super) fn check_expansion(&self, cells: &[CellType]) -> R<Vec<u64>> {
        fn size(cells: &[CellType], c: usize, memo: &mut [Option<u64>]) -> u64 {
            if let Some(s) = memo[c] {
                return s;
            }
            let per_edge = cells[c].candidates.iter().fold(0u64, |a, cand| {
                a.saturating_add(match cand {
                    Candidate::Op(_) => 1,
                    Candidate::Cell(m) => size(cells, *m, memo),
                })
            });
            let s = per_edge.saturating_mul(cells[c].edges.len() as u64);
            memo[c] = Some(s);
            s
        }
        let mut memo = vec![None; cells.len()];
        for (c, cell) in cells.iter().enumerate() {
            let s = size(cells, c, &mut memo);
            if s > MAX_EXPANSION {
                return Err(self.err(cell.span, format!("cell \"{}\" expands to {s} op instances with its motifs in place, more than the {MAX_EXPANSION} allowed", cell.name)));
            }
        }
        Ok(memo.into_iter().map(|s| s.unwrap_or(0)).collect())
    }

    /// Counts a layer of cell `ci` against [`MAX_WORK`].
    pub(super) fn charge(&self, ci: usize, span: Span) -> R<()> {
        let w = self.work.get().saturating_add(self.expansion[ci]);
        self.work.set(w);
        if w > MAX_WORK {
            return Err(self.err(span, format!("the network expands to more than {MAX_WORK} op instances (every cell layer's ops, motifs in place)")));
        }
        Ok(())
    }

    pub(super) fn cell_index(&self, name: &Spanned<String>) -> R<usize> {
        self.cell_names
            .iter()
            .position(|n| *n == name.value)
            .ok_or_else(|| {
                let known: Vec<&str> = self.cell_names.iter().map(String::as_str).collect();
                self.unknown(name, "cell", &known)
            })
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
