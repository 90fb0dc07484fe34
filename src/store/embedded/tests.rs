use super::*;

/// A data directory that cannot be created says which and why, and
/// keeps the operating system's error as its source.
#[test]
fn an_open_failure_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let Err(e) = EmbeddedStore::open(&file.join("store"), Durability::Process, 8) else {
        panic!("a store under a file opened");
    };
    let text = e.to_string();
    assert!(text.contains("cannot create data directory"), "{text}");
    let source = std::error::Error::source(&e).expect("the cause is kept");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
}
