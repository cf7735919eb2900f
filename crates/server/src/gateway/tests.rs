//! Tests of `gateway`.

use super::*;

#[test]
fn ids_sort_by_time_and_differ() {
    let a = new_id("inf");
    std::thread::sleep(Duration::from_millis(2));
    let b = new_id("inf");
    assert!(a < b, "{a} {b}");
    assert_eq!(a.len(), "inf_".len() + 28);
}
