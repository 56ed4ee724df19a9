//! Property tests for the DAG loader: no input makes it panic, and for
//! randomly generated DAGs it finds exactly the edges and cycles that the
//! generator put in.

use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, Registry, TaskAction, TaskConfig, TaskFailure};
use proptest::prelude::*;

struct Stub;

struct StubAction;

#[async_trait]
impl TaskAction for StubAction {
    async fn run(&self, _: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        Ok(None)
    }
}

#[derive(serde::Deserialize)]
struct StubConfig {
    #[allow(dead_code)]
    command: Option<String>,
}

impl TaskConfig for StubConfig {}

impl Kind for Stub {
    const NAME: &'static str = "noop";
    const SUMMARY: &'static str = "stub";
    type Config = StubConfig;

    fn action(&self, _config: StubConfig) -> Arc<dyn TaskAction> {
        Arc::new(StubAction)
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(Stub));
    r
}

fn load(text: &str) -> Result<engine::Dag, engine::diagnostic::Diagnostics> {
    engine::dag::load_str(std::path::Path::new("/dags/p.toml"), text, &[], &registry())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Arbitrary bytes written to a file: an error or a DAG, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.toml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(errors) = engine::dag::load(&path, &[], &registry()) {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                prop_assert!(e.to_string().contains("junk.toml"));
            }
        }
    }

    /// Text made of TOML's own punctuation and a few keywords, which reaches
    /// far deeper into the parser and the validator than random bytes.
    #[test]
    fn toml_shaped_text_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("[dag]\n"), Just("name = \"d\"\n"), Just("[tasks.a]\n"), Just("[tasks.b]\n"),
                Just("type = \"noop\"\n"), Just("type = 3\n"), Just("depends_on = [\"a\"]\n"),
                Just("depends_on = [\"b\", 1]\n"), Just("retry = { max_attempts = 0 }\n"),
                Just("retry = { backoff_rate = 0.5, jitter = \"x\" }\n"), Just("timeout_seconds = -1\n"),
                Just("command = \"${params.x} ${run.id} ${\"\n"), Just("[params]\n"), Just("x = [1]\n"),
                Just("[defaults]\n"), Just("[[tasks]]\n"), Just("{"), Just("}"), Just("["), Just("]"),
                Just("="), Just("\""), Just("\n"), Just("é"), Just("\u{0}"), Just("'''"),
            ],
            0..40,
        )
    ) {
        let text: String = parts.concat();
        let _ = load(&text);
    }

    /// For a random DAG (edges only from lower to higher index, so acyclic),
    /// the loader keeps exactly the declared edges.
    #[test]
    fn random_acyclic_dags_load_with_their_edges(
        n in 1usize..30,
        edge_bits in proptest::collection::vec(any::<bool>(), 435),
    ) {
        let mut text = String::from("[dag]\nname = \"random\"\n");
        let mut expected = std::collections::BTreeSet::new();
        let mut bit = 0;
        for i in 0..n {
            let mut deps = Vec::new();
            for j in 0..i {
                if edge_bits[bit % edge_bits.len()] {
                    deps.push(format!("\"t{j}\""));
                    expected.insert((j, i));
                }
                bit += 1;
            }
            text.push_str(&format!("[tasks.t{i}]\ntype = \"noop\"\ndepends_on = [{}]\n", deps.join(", ")));
        }
        let dag = load(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: std::collections::BTreeSet<(usize, usize)> = dag
            .graph
            .edge_indices()
            .map(|e| {
                let (a, b) = dag.graph.edge_endpoints(e).unwrap();
                (a.index(), b.index())
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    /// Closing a chain into a ring is always reported as a cycle that names
    /// every task of the ring in order.
    #[test]
    fn rings_are_reported_with_their_path(n in 1usize..12) {
        let mut text = String::from("[dag]\nname = \"ring\"\n");
        for i in 0..n {
            let dep = (i + n - 1) % n;
            text.push_str(&format!("[tasks.t{i}]\ntype = \"noop\"\ndepends_on = [\"t{dep}\"]\n"));
        }
        let errors = load(&text).err().expect("a ring is not a DAG");
        let message = errors.to_string();
        let path: Vec<String> = (0..n).chain([0]).map(|i| format!("t{i}")).collect();
        prop_assert!(message.contains(&format!("dependency cycle: {}", path.join(" -> "))), "{}", message);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for text in [
        format!("a = {}", "[".repeat(100_000)),
        format!("a = {}{}", "[".repeat(50_000), "]".repeat(50_000)),
        format!("a = {}", "{x=".repeat(50_000)),
    ] {
        assert!(load(&text).is_err());
    }
}
