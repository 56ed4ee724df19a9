//! The shape of the state machine: a DAG turned into nested sequences and
//! parallel branches, the only two ways Amazon States Language composes
//! states (a `Parallel` state waits for all its branches; a sequence runs
//! one state after the other).
//!
//! # The algorithm
//!
//! [`plan`] splits a set of tasks (at first, all of them), recursively:
//!
//! 1. One task is a [`Plan::Task`].
//! 2. If the tasks fall into several weakly connected components (no
//!    dependency, direct or not, links two of them), the components run
//!    as the branches of a [`Plan::Parallel`].
//! 3. Otherwise, if the set has *series cuts* — a split into a first part
//!    `A` and the rest `B` where every task of `A` is an ancestor of every
//!    task of `B` — it is a [`Plan::Sequence`] of the parts between all its
//!    cuts. Such an `A` is a prefix of every topological order (each task
//!    of `B` waits for all of `A`), so the cuts are found on one
//!    topological order: the prefix of length `k` is a cut when every later
//!    task has all of the first `k` among its ancestors.
//! 4. Otherwise the dependencies are not series-parallel: they contain an
//!    "N" such as `a→c, b→c, b→d`, which no nesting of sequences and
//!    parallels expresses exactly. The set is then serialized at a
//!    topologically closed cut: first its *sources* (the tasks with no
//!    dependency inside the set), in parallel, then the rest.
//!
//! # Why it is right
//!
//! Every dependency `u→v` inside a set is kept by the step that separates
//! `u` from `v`: never step 2 (components share no dependency); in step 3,
//! `u` is an ancestor of `v`, so `u` lies in an earlier part of the
//! sequence; in step 4 the sources are down-closed (nothing in them
//! depends on the rest), so `u` is a source and `v` is in the rest, which
//! starts after all sources finished. Dependencies that stay inside one
//! part are kept by the recursion; a set never loses a dependency to the
//! outside because its parts only ever get more ordering, never less.
//! Each step splits a set of two or more tasks into smaller non-empty
//! ones, so every task ends up exactly once in the plan.
//!
//! # What parallelism is lost
//!
//! None for a series-parallel DAG (steps 2 and 3 add no ordering that the
//! DAG does not imply: two tasks end up in one sequence only when one is
//! an ancestor of the other). In step 4, every task of the rest also waits
//! for the sources it does not depend on: in `a→c, b→c, b→d`, `d` waits for
//! `a`. That ordering is the price of the translation; the property tests
//! check that it never goes the other way (a task before a dependency).

/// A nested series/parallel plan over task indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Task(usize),
    /// Each part starts when the previous one has finished.
    Sequence(Vec<Plan>),
    /// The branches run at once; the state ends when all have finished.
    Parallel(Vec<Plan>),
}

impl Plan {
    /// Every task in the plan, in plan order.
    pub fn tasks(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<usize>) {
        match self {
            Plan::Task(i) => out.push(*i),
            Plan::Sequence(parts) | Plan::Parallel(parts) => {
                parts.iter().for_each(|p| p.collect(out));
            }
        }
    }
}

/// The plan for tasks `0..task_count` with dependencies `edges`
/// (`(dependency, dependent)`), which must be acyclic. Deterministic:
/// branches and parts follow task order where the DAG leaves a choice.
///
/// # Panics
///
/// If `task_count` is 0 (a DAG has at least one task).
pub fn plan(task_count: usize, edges: &[(usize, usize)]) -> Plan {
    assert!(task_count > 0, "a DAG has at least one task");
    let mut deps = vec![Vec::new(); task_count];
    let mut dependents = vec![Vec::new(); task_count];
    for &(from, to) in edges {
        deps[to].push(from);
        dependents[from].push(to);
    }
    let graph = Graph { deps, dependents };
    let all: Vec<usize> = (0..task_count).collect();
    graph.split(&all)
}

struct Graph {
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// `set` is sorted ascending.
    fn split(&self, set: &[usize]) -> Plan {
        if let [only] = set {
            return Plan::Task(*only);
        }
        let mut inside = vec![false; self.deps.len()];
        for &t in set {
            inside[t] = true;
        }
        let components = self.components(set, &inside);
        if components.len() > 1 {
            return Plan::Parallel(components.iter().map(|c| self.split(c)).collect());
        }
        let order = self.topological(set, &inside);
        let cuts = self.series_cuts(&order, &inside);
        if !cuts.is_empty() {
            let mut parts = Vec::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([order.len()]) {
                let mut part = order[start..end].to_vec();
                part.sort_unstable();
                parts.push(self.split(&part));
                start = end;
            }
            return sequence(parts);
        }
        // Not series-parallel here: the sources first, then the rest (see
        // the module docs for why this is safe and what it costs).
        let (sources, rest): (Vec<usize>, Vec<usize>) = set
            .iter()
            .partition(|&&t| self.deps[t].iter().all(|&d| !inside[d]));
        sequence(vec![self.split(&sources), self.split(&rest)])
    }

    /// Weakly connected components of `set`, each sorted, ordered by their
    /// first task.
    fn components(&self, set: &[usize], inside: &[bool]) -> Vec<Vec<usize>> {
        let mut seen = vec![false; inside.len()];
        let mut out = Vec::new();
        for &start in set {
            if seen[start] {
                continue;
            }
            seen[start] = true;
            let mut component = vec![start];
            let mut stack = vec![start];
            while let Some(t) = stack.pop() {
                for &n in self.deps[t].iter().chain(&self.dependents[t]) {
                    if inside[n] && !seen[n] {
                        seen[n] = true;
                        component.push(n);
                        stack.push(n);
                    }
                }
            }
            component.sort_unstable();
            out.push(component);
        }
        out
    }

    /// Kahn's algorithm, the lowest ready task first (so the order is the
    /// same on every run).
    fn topological(&self, set: &[usize], inside: &[bool]) -> Vec<usize> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut waiting: Vec<usize> = vec![0; inside.len()];
        let mut ready = BinaryHeap::new();
        for &t in set {
            waiting[t] = self.deps[t].iter().filter(|&&d| inside[d]).count();
            if waiting[t] == 0 {
                ready.push(Reverse(t));
            }
        }
        let mut order = Vec::with_capacity(set.len());
        while let Some(Reverse(t)) = ready.pop() {
            order.push(t);
            for &n in &self.dependents[t] {
                if inside[n] {
                    waiting[n] -= 1;
                    if waiting[n] == 0 {
                        ready.push(Reverse(n));
                    }
                }
            }
        }
        order
    }

    /// The positions `k` (0 < k < len) where `order[..k]` is a series cut:
    /// every task from `k` on has every task before `k` as an ancestor.
    fn series_cuts(&self, order: &[usize], inside: &[bool]) -> Vec<usize> {
        let n = order.len();
        let words = n.div_ceil(64);
        let mut position = vec![usize::MAX; inside.len()];
        for (p, &t) in order.iter().enumerate() {
            position[t] = p;
        }
        // ancestors[p]: the positions of the ancestors of order[p], as bits.
        let mut ancestors: Vec<Vec<u64>> = Vec::with_capacity(n);
        // covered[p]: the length of the longest prefix of `order` made of
        // ancestors of order[p].
        let mut covered = Vec::with_capacity(n);
        for (p, &t) in order.iter().enumerate() {
            let mut bits = vec![0u64; words];
            for &d in &self.deps[t] {
                if inside[d] {
                    let q = position[d];
                    for (w, word) in bits.iter_mut().enumerate() {
                        *word |= ancestors[q][w];
                    }
                    bits[q / 64] |= 1 << (q % 64);
                }
            }
            let mut prefix = 0;
            while prefix < p && bits[prefix / 64] & (1 << (prefix % 64)) != 0 {
                prefix += 1;
            }
            covered.push(prefix);
            ancestors.push(bits);
        }
        // A cut at k needs covered[j] >= k for every j >= k.
        let mut cuts = Vec::new();
        let mut min_after = usize::MAX;
        for k in (1..n).rev() {
            min_after = min_after.min(covered[k]);
            if min_after >= k {
                cuts.push(k);
            }
        }
        cuts.reverse();
        cuts
    }
}

/// A sequence of `parts`, nested sequences flattened.
fn sequence(parts: Vec<Plan>) -> Plan {
    let mut flat = Vec::new();
    for part in parts {
        match part {
            Plan::Sequence(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    if flat.len() == 1 {
        flat.pop().expect("one part")
    } else {
        Plan::Sequence(flat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use Plan::{Parallel as P, Sequence as S, Task as T};

    /// Where a task sits: for each enclosing node, whether it is a
    /// parallel, and which child holds the task.
    fn paths(plan: &Plan, n: usize) -> Vec<Vec<(bool, usize)>> {
        fn walk(
            plan: &Plan,
            here: &mut Vec<(bool, usize)>,
            out: &mut [Option<Vec<(bool, usize)>>],
        ) {
            match plan {
                Plan::Task(t) => {
                    assert!(out[*t].is_none(), "task {t} appears twice");
                    out[*t] = Some(here.clone());
                }
                Plan::Sequence(parts) | Plan::Parallel(parts) => {
                    let parallel = matches!(plan, Plan::Parallel(_));
                    assert!(parts.len() >= 2, "a node with one part: {plan:?}");
                    for (i, part) in parts.iter().enumerate() {
                        here.push((parallel, i));
                        walk(part, here, out);
                        here.pop();
                    }
                }
            }
        }
        let mut out = vec![None; n];
        walk(plan, &mut Vec::new(), &mut out);
        out.into_iter()
            .enumerate()
            .map(|(t, p)| p.unwrap_or_else(|| panic!("task {t} is missing")))
            .collect()
    }

    /// At the lowest common ancestor of `a` and `b`: `Some(true)` if it
    /// runs `a`'s part before `b`'s, `Some(false)` if they are in branches
    /// of one parallel, `None` if `b` comes first.
    fn relation(paths: &[Vec<(bool, usize)>], a: usize, b: usize) -> Option<bool> {
        let (pa, pb) = (&paths[a], &paths[b]);
        let split = pa
            .iter()
            .zip(pb)
            .position(|(x, y)| x != y)
            .expect("two tasks part somewhere");
        let ((parallel, ia), (_, ib)) = (pa[split], pb[split]);
        if parallel {
            Some(false)
        } else if ia < ib {
            Some(true)
        } else {
            None
        }
    }

    /// Asserts that every edge's dependency finishes before its dependent
    /// starts, and every task is there once.
    fn assert_respects(n: usize, edges: &[(usize, usize)], plan: &Plan) {
        let paths = paths(plan, n);
        for &(a, b) in edges {
            assert_eq!(
                relation(&paths, a, b),
                Some(true),
                "{a}→{b} is not kept by {plan:?}"
            );
        }
    }

    fn reachability(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<bool>> {
        let mut reach = vec![vec![false; n]; n];
        let mut out = vec![Vec::new(); n];
        for &(a, b) in edges {
            out[a].push(b);
        }
        for (start, row) in reach.iter_mut().enumerate() {
            let mut stack = out[start].clone();
            while let Some(t) = stack.pop() {
                if !row[t] {
                    row[t] = true;
                    stack.extend(&out[t]);
                }
            }
        }
        reach
    }

    #[test]
    fn a_chain_is_a_sequence() {
        assert_eq!(plan(3, &[(0, 1), (1, 2)]), S(vec![T(0), T(1), T(2)]));
    }

    #[test]
    fn independent_tasks_are_branches() {
        assert_eq!(plan(3, &[]), P(vec![T(0), T(1), T(2)]));
    }

    #[test]
    fn a_diamond_is_a_sequence_around_a_parallel() {
        // 0 → {1, 2} → 3
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3)];
        assert_eq!(plan(4, &edges), S(vec![T(0), P(vec![T(1), T(2)]), T(3)]));
    }

    #[test]
    fn a_transitive_edge_changes_nothing() {
        // 0 → 1 → 2 and 0 → 2 order the same as the chain alone.
        assert_eq!(
            plan(3, &[(0, 1), (1, 2), (0, 2)]),
            S(vec![T(0), T(1), T(2)])
        );
    }

    #[test]
    fn the_n_shape_is_cut_after_its_sources() {
        // a=0, b=1, c=2, d=3: a→c, b→c, b→d. d must wait for a as well.
        let edges = [(0, 2), (1, 2), (1, 3)];
        let got = plan(4, &edges);
        assert_eq!(got, S(vec![P(vec![T(0), T(1)]), P(vec![T(2), T(3)])]));
        assert_respects(4, &edges, &got);
    }

    #[test]
    fn the_rental_shape() {
        // 5 ingests → clean → 2 metrics → crawl → 7 queries → report,
        // which also depends on clean directly.
        let mut edges = Vec::new();
        for i in 0..5 {
            edges.push((i, 5));
        }
        edges.extend([(5, 6), (5, 7), (6, 8), (7, 8)]);
        for q in 9..16 {
            edges.push((8, q));
            edges.push((q, 16));
        }
        edges.push((5, 16));
        let got = plan(17, &edges);
        assert_eq!(
            got,
            S(vec![
                P((0..5).map(T).collect()),
                T(5),
                P(vec![T(6), T(7)]),
                T(8),
                P((9..16).map(T).collect()),
                T(16),
            ])
        );
    }

    /// A random DAG: an edge for some pairs (i, j) with i before j in a
    /// random order of the tasks, so any labelling can occur.
    fn dags() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
        (1usize..14).prop_flat_map(|n| {
            let pairs = n * (n - 1) / 2;
            (
                Just(n),
                proptest::collection::vec(proptest::bool::weighted(0.3), pairs),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            )
                .prop_map(|(n, chosen, order)| {
                    let mut edges = Vec::new();
                    let mut k = 0;
                    for i in 0..n {
                        for j in i + 1..n {
                            if chosen[k] {
                                edges.push((order[i], order[j]));
                            }
                            k += 1;
                        }
                    }
                    (n, edges)
                })
        })
    }

    /// A series-parallel expression over `leaves` tasks.
    #[derive(Debug, Clone)]
    enum Expr {
        Leaf,
        Series(Box<Expr>, Box<Expr>),
        Par(Box<Expr>, Box<Expr>),
    }

    fn exprs() -> impl Strategy<Value = Expr> {
        Just(Expr::Leaf).prop_recursive(5, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Series(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Expr::Par(Box::new(a), Box::new(b))),
            ]
        })
    }

    /// The DAG of an expression: tasks numbered left to right; a series
    /// links every sink of its left side to every source of its right.
    /// Returns (sources, sinks) of the sub-expression.
    fn build(e: &Expr, n: &mut usize, edges: &mut Vec<(usize, usize)>) -> (Vec<usize>, Vec<usize>) {
        match e {
            Expr::Leaf => {
                *n += 1;
                (vec![*n - 1], vec![*n - 1])
            }
            Expr::Series(a, b) => {
                let (sa, ka) = build(a, n, edges);
                let (sb, kb) = build(b, n, edges);
                for &x in &ka {
                    for &y in &sb {
                        edges.push((x, y));
                    }
                }
                (sa, kb)
            }
            Expr::Par(a, b) => {
                let (mut sa, mut ka) = build(a, n, edges);
                let (sb, kb) = build(b, n, edges);
                sa.extend(sb);
                ka.extend(kb);
                (sa, ka)
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// For every edge a→b, a finishes before b starts, whatever the
        /// DAG; every task appears exactly once.
        #[test]
        fn every_dependency_is_kept((n, edges) in dags()) {
            let got = plan(n, &edges);
            assert_respects(n, &edges, &got);
            let mut tasks = got.tasks();
            tasks.sort_unstable();
            prop_assert_eq!(tasks, (0..n).collect::<Vec<_>>());
        }

        /// A series-parallel DAG loses no parallelism: two tasks are in
        /// one sequence exactly when one depends on the other.
        #[test]
        fn series_parallel_dags_keep_all_parallelism(e in exprs()) {
            let mut n = 0;
            let mut edges = Vec::new();
            build(&e, &mut n, &mut edges);
            let got = plan(n, &edges);
            assert_respects(n, &edges, &got);
            let reach = reachability(n, &edges);
            let paths = paths(&got, n);
            for (a, from_a) in reach.iter().enumerate() {
                for (b, from_b) in reach.iter().enumerate() {
                    if a != b && !from_a[b] && !from_b[a] {
                        prop_assert_eq!(relation(&paths, a, b), Some(false),
                            "{} and {} are independent but ordered in {:?}", a, b, got);
                    }
                }
            }
        }
    }
}
