//! `${...}` substitution in a task's string fields.
//!
//! Known names: `${params.NAME}`, `${run.id}`, `${task.id}`, `${dag.dir}`.
//! An unknown name is an error, never an empty string: a typo must not turn
//! `rm -rf ${params.out_dir}/tmp` into `rm -rf /tmp`. `$${` writes a literal
//! `${`, and a `$` not followed by `{` is left alone, so shell variables
//! written `$HOME` pass through untouched.

use std::collections::BTreeMap;

use thiserror::Error;

/// The values a reference can resolve to.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub params: BTreeMap<String, String>,
    pub run_id: String,
    pub task_id: String,
    pub dag_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    pub help: String,
}

const KNOWN: &str = "${params.NAME}, ${run.id}, ${task.id}, ${dag.dir}";

/// Replaces every reference in `text`.
pub fn substitute(text: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(TemplateError {
                    message: format!("`${{` without a closing `}}` in {text:?}"),
                    help: format!(
                        "close the reference, or write `$${{` for a literal `${{`; known references: {KNOWN}"
                    ),
                });
            };
            out.push_str(&resolve(body[..end].trim(), vars)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(name: &str, vars: &Vars) -> Result<String, TemplateError> {
    let value = match name.split_once('.') {
        Some(("params", param)) => match vars.params.get(param) {
            Some(value) => return Ok(value.clone()),
            None => {
                let declared: Vec<&str> = vars.params.keys().map(String::as_str).collect();
                let hint = match crate::diagnostic::nearest(param, declared.iter().copied()) {
                    Some(near) => format!("did you mean `${{params.{near}}}`? "),
                    None => String::new(),
                };
                return Err(TemplateError {
                    message: format!("unknown parameter `${{{name}}}`"),
                    help: format!(
                        "{hint}declare it under [params] (declared: {})",
                        if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                });
            }
        },
        Some(("run", "id")) => &vars.run_id,
        Some(("task", "id")) => &vars.task_id,
        Some(("dag", "dir")) => &vars.dag_dir,
        _ => {
            return Err(TemplateError {
                message: format!("unknown reference `${{{name}}}`"),
                help: format!(
                    "known references: {KNOWN}; for a shell variable write `$NAME` or `$${{NAME}}`"
                ),
            });
        }
    };
    Ok(value.clone())
}

/// Substitutes every string inside a TOML value (array items and table
/// values, not table keys).
pub fn substitute_value(value: &toml::Value, vars: &Vars) -> Result<toml::Value, TemplateError> {
    Ok(match value {
        toml::Value::String(s) => toml::Value::String(substitute(s, vars)?),
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|v| substitute_value(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => toml::Value::Table(substitute_table(table, vars)?),
        other => other.clone(),
    })
}

pub fn substitute_table(table: &toml::Table, vars: &Vars) -> Result<toml::Table, TemplateError> {
    table
        .iter()
        .map(|(k, v)| Ok((k.clone(), substitute_value(v, vars)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            params: BTreeMap::from([("greeting".into(), "hello".into())]),
            run_id: "r1".into(),
            task_id: "t1".into(),
            dag_dir: "/dags".into(),
        }
    }

    #[test]
    fn replaces_every_known_name() {
        let got = substitute(
            "echo ${params.greeting} ${run.id}/${task.id} in ${dag.dir}",
            &vars(),
        );
        assert_eq!(got.unwrap(), "echo hello r1/t1 in /dags");
    }

    #[test]
    fn shell_variables_and_escapes_pass_through() {
        assert_eq!(
            substitute("echo $HOME $$ $${HOME} a$", &vars()).unwrap(),
            "echo $HOME $$ ${HOME} a$"
        );
    }

    #[test]
    fn unknown_names_are_errors_with_a_suggestion() {
        let err = substitute("${params.greting}", &vars()).unwrap_err();
        assert!(err.message.contains("params.greting"), "{err:?}");
        assert!(
            err.help.contains("did you mean `${params.greeting}`"),
            "{err:?}"
        );
        let err = substitute("${HOME}", &vars()).unwrap_err();
        assert!(err.help.contains("$NAME"), "{err:?}");
        assert!(substitute("${run.id", &vars()).is_err());
    }

    #[test]
    fn substitutes_inside_arrays_and_tables() {
        let value: toml::Table = toml::from_str(
            r#"args = ["--out", "${dag.dir}/x"]
            env = { A = "${run.id}" }
            n = 3"#,
        )
        .unwrap();
        let got = substitute_table(&value, &vars()).unwrap();
        assert_eq!(got["args"][1].as_str(), Some("/dags/x"));
        assert_eq!(got["env"]["A"].as_str(), Some("r1"));
        assert_eq!(got["n"].as_integer(), Some(3));
    }
}
