//! `flux-engine graph DAG --format dot|mermaid`: the DAG as a picture.

use engine::Dag;

/// Graphviz DOT, tasks in declaration order, one edge per dependency.
pub fn dot(dag: &Dag) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        quote(&dag.name)
    );
    for task in &dag.tasks {
        out.push_str(&format!(
            "  {} [label={}];\n",
            quote(&task.id),
            quote(&format!("{}\n({})", task.id, task.kind))
        ));
    }
    for task in &dag.tasks {
        for dep in &task.depends_on {
            out.push_str(&format!("  {} -> {};\n", quote(dep), quote(&task.id)));
        }
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart, which GitHub renders inside Markdown.
pub fn mermaid(dag: &Dag) -> String {
    let mut out = String::from("flowchart LR\n");
    for task in &dag.tasks {
        // Ids are [A-Za-z0-9_-], which Mermaid accepts as node ids.
        out.push_str(&format!("  {}[\"{} ({})\"]\n", task.id, task.id, task.kind));
    }
    for task in &dag.tasks {
        for dep in &task.depends_on {
            out.push_str(&format!("  {dep} --> {}\n", task.id));
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}
