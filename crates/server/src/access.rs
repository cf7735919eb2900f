//! What a client may name on the server's machine: no path and no model file comes from a
//! request.
//!
//! ```text
//! request.task "sst2" ──Access::task──> <task root>/sst2/task.toml     (a name, never a path)
//! request.prompt "prompt:NAME@LABEL" ──> the library's version, written to <runs>/<id>/prompt.toml
//! request.prompt "prompts/human.toml" ──> a file inside that task's folder (after symlinks)
//! out, run_dir, meta.templates ──> refused (400 naming the field); the server derives them
//! model "local:/any/path" ──check_model──> refused unless [server] allow_model_paths (admin)
//! ```
//!
//! Task roots are folders the operator configures (`[server] task_roots`, `serve --tasks DIR`);
//! a task is a sub-folder holding `task.toml`, named by its folder. Everything a run writes goes
//! under the runs directory, in a folder named by the run id. The files a task names (its data,
//! its prompt) are the operator's: a task root is trusted, a request is not.

use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;
use metaprompt_llm::ProviderKind;
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The prefix that makes a request's `prompt` a library reference (as in the OpenAI-compatible
/// endpoint's `model`).
pub const LIBRARY_PREFIX: &str = "prompt:";

/// The file a task folder holds.
pub const TASK_FILE: &str = "task.toml";

/// Where the server may read tasks from, and which models a client may name.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Canonical task roots.
    roots: Vec<PathBuf>,
    /// `local:` model files outside the catalog may be named over HTTP.
    pub allow_model_paths: bool,
}

/// A task a client may name (`GET /v1/tasks`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskEntry {
    /// What a request names it by: its folder's name.
    pub name: String,
    /// The task's own `name` (the library name its results get).
    pub task_name: Option<String>,
    pub description: Option<String>,
    /// Why the task file does not load, when it does not.
    pub error: Option<String>,
}

impl Access {
    /// Check the roots exist (they are made canonical, so a symlink inside a root that leads
    /// out of it is seen for what it is).
    pub fn new(roots: &[PathBuf], allow_model_paths: bool) -> Result<Self, String> {
        let mut canonical = Vec::new();
        for r in roots {
            let c =
                std::fs::canonicalize(r).map_err(|e| format!("task root {}: {e}", r.display()))?;
            if !c.is_dir() {
                return Err(format!("task root {}: not a directory", r.display()));
            }
            canonical.push(c);
        }
        Ok(Self {
            roots: canonical,
            allow_model_paths,
        })
    }

    /// The task file a request names by `name` (`param` is the request field, for errors).
    pub fn task(&self, name: &str, param: &str) -> ApiResult<PathBuf> {
        if !metaprompt_eval::name::is_valid(name) {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{param}: a task is named by its folder in a task root ({}), not by a path; \
                     GET /v1/tasks lists them",
                    metaprompt_eval::name::EXPECTED
                ),
            ));
        }
        if self.roots.is_empty() {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{param}: this server has no task roots, so runs cannot be started over HTTP; \
                     the operator sets [server] task_roots or `serve --tasks DIR`"
                ),
            ));
        }
        for root in &self.roots {
            let file = root.join(name).join(TASK_FILE);
            if let Ok(real) = std::fs::canonicalize(&file)
                && real.starts_with(root)
                && real.is_file()
            {
                return Ok(real);
            }
        }
        Err(ApiError::not_found(
            param,
            format!(
                "{param}: no task `{name}` in this server's task roots; GET /v1/tasks lists them"
            ),
        ))
    }

    /// A file a request names inside a task's folder (`rel`, relative, no `..`), after
    /// symlinks are followed.
    pub fn file_in_task(&self, task_file: &Path, rel: &Path, param: &str) -> ApiResult<PathBuf> {
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        let refuse = |why: &str| {
            ApiError::invalid(
                param,
                format!(
                    "{param}: {why}; name a file inside the task's folder by a relative path, or a \
                     library version as `{LIBRARY_PREFIX}NAME@LABEL`"
                ),
            )
        };
        if rel.as_os_str().is_empty() || !plain {
            return Err(refuse("not a relative path without `..`"));
        }
        let dir = task_file.parent().unwrap_or(Path::new("/"));
        let real = std::fs::canonicalize(dir.join(rel)).map_err(|_| {
            ApiError::not_found(param, format!("{param}: no such file in the task's folder"))
        })?;
        if !real.starts_with(dir) || !real.is_file() {
            return Err(refuse("it leads outside the task's folder"));
        }
        Ok(real)
    }

    /// Every task in the roots.
    pub fn tasks(&self) -> Vec<TaskEntry> {
        let mut out = Vec::new();
        for root in &self.roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| metaprompt_eval::name::is_valid(n))
                .collect();
            names.sort();
            for name in names {
                if out.iter().any(|t: &TaskEntry| t.name == name) {
                    continue; // an earlier root's task of that name wins, as in `task`
                }
                let Ok(file) = self.task(&name, "task") else {
                    continue;
                };
                let entry = match metaprompt_eval::Task::load(&file) {
                    Ok(t) => TaskEntry {
                        name,
                        task_name: Some(t.config.name.clone()),
                        description: Some(t.config.description.clone()),
                        error: None,
                    },
                    Err(e) => TaskEntry {
                        name,
                        task_name: None,
                        description: None,
                        error: Some(crate::secrets::strip_quoted(&e.to_string())),
                    },
                };
                out.push(entry);
            }
        }
        out
    }
}

/// Refuse a model spec a client may not name: an embedded model by file path (anything not in
/// the catalog) unless the operator allowed it. Remote models resolve only through providers
/// the server's config (or its built-ins) define, so a client never chooses where a call goes.
pub fn check_model(state: &AppState, spec: &str, param: &str) -> ApiResult<()> {
    let Ok(info) = state.engine.hub().resolve(spec) else {
        return Ok(()); // opening it fails with the resolver's own 400
    };
    if info.kind == ProviderKind::Local
        && !state.access.allow_model_paths
        && !state.engine.config().catalog().contains_key(&info.model)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "model_not_allowed",
            format!(
                "{param}: `{spec}` is not one of the embedded models ({}); model files are \
                 named on the server's command line, not over HTTP ([server] allow_model_paths)",
                state
                    .engine
                    .config()
                    .catalog()
                    .keys()
                    .map(|k| format!("local:{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .param(param));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_names_in_a_root_and_files_stay_inside_the_task_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tasks");
        std::fs::create_dir_all(root.join("t1/prompts")).unwrap();
        std::fs::write(root.join("t1/task.toml"), "x").unwrap();
        std::fs::write(root.join("t1/prompts/p.toml"), "x").unwrap();
        std::fs::write(dir.path().join("secret.toml"), "x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.toml"), root.join("t1/link.toml"))
                .unwrap();
            std::fs::create_dir_all(root.join("t2")).unwrap();
            std::os::unix::fs::symlink(dir.path().join("secret.toml"), root.join("t2/task.toml"))
                .unwrap();
        }
        let access = Access::new(std::slice::from_ref(&root), false).unwrap();
        let task = access.task("t1", "request.task").unwrap();
        assert!(task.ends_with("t1/task.toml"));
        for bad in ["../tasks/t1", "/etc", "t1/task.toml", "..", "", "t1\0"] {
            let e = access.task(bad, "request.task").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(e.param.as_deref(), Some("request.task"));
        }
        assert_eq!(
            access.task("nosuch", "request.task").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        #[cfg(unix)]
        assert!(
            access.task("t2", "request.task").is_err(),
            "a symlink out of the root"
        );
        assert!(
            access
                .file_in_task(&task, Path::new("prompts/p.toml"), "request.prompt")
                .is_ok()
        );
        for bad in [
            "../secret.toml",
            "/etc/passwd",
            "prompts/../../secret.toml",
            "link.toml",
            "",
            "prompts",
        ] {
            assert!(
                access
                    .file_in_task(&task, Path::new(bad), "request.prompt")
                    .is_err(),
                "{bad:?}"
            );
        }
        let none = Access::new(&[], false).unwrap();
        assert!(none.task("t1", "request.task").is_err());
        assert!(Access::new(&[dir.path().join("nosuch")], false).is_err());
    }
}
