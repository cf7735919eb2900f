//! Tests of `openai`.

use super::*;

#[test]
fn served_references() {
    assert_eq!(served("local:gemma-3-270m"), None);
    assert_eq!(
        served("prompt:support"),
        Some(("support".into(), None, None))
    );
    assert_eq!(
        served("prompt:support@staging"),
        Some(("support".into(), Some("staging".into()), None))
    );
    assert_eq!(
        served("prompt:support@v3"),
        Some(("support".into(), None, Some("v3".into())))
    );
}
