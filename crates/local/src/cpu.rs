//! Which CPUs the embedded model runs on. llama.cpp is built here with ggml's defaults for a
//! portable build (`GGML_NATIVE` off): on x86-64 its CPU backend uses AVX, AVX2, FMA and F16C
//! unconditionally, so a CPU without them would die with SIGILL in the first matrix product.
//! [`missing`] names what this CPU lacks so that the model refuses to load with words instead;
//! [`describe`] is what `metaprompt model list` prints.

/// The instruction sets the CPU backend is built for.
#[cfg(target_arch = "x86_64")]
pub const BUILT_FOR: &[&str] = &["avx", "avx2", "fma", "f16c"];
#[cfg(not(target_arch = "x86_64"))]
pub const BUILT_FOR: &[&str] = &[];

/// Whether this CPU has `feature` (one of [`BUILT_FOR`]).
fn has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        true
    }
}

/// The instruction sets the backend needs and this CPU lacks (empty: it runs here).
pub fn missing() -> Vec<&'static str> {
    BUILT_FOR.iter().copied().filter(|f| !has(f)).collect()
}

/// Why the embedded model cannot run on this CPU, if it cannot.
pub fn problem() -> Option<String> {
    let missing = missing();
    (!missing.is_empty()).then(|| {
        format!(
            "this CPU lacks {}, which the embedded model's llama.cpp build needs (it is built for \
             x86-64 with {}); use a model over HTTP (openai:, anthropic:, or an OpenAI-compatible \
             server) on this machine",
            missing.join(", ").to_uppercase(),
            BUILT_FOR.join(", ").to_uppercase()
        )
    })
}

/// One line on the CPU backend: what it is built for and whether this CPU has it.
pub fn describe() -> String {
    if BUILT_FOR.is_empty() {
        return format!("llama.cpp CPU backend for {}", std::env::consts::ARCH);
    }
    let built = BUILT_FOR.join(", ").to_uppercase();
    match problem() {
        None => format!("llama.cpp CPU backend for x86-64 with {built} (this CPU has them)"),
        Some(p) => format!("llama.cpp CPU backend for x86-64 with {built}: {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_runs_the_backend_and_says_so() {
        // The test machines run the embedded model, so they have what it is built for.
        assert_eq!(missing(), Vec::<&str>::new());
        assert_eq!(problem(), None);
        assert!(describe().contains("CPU backend"), "{}", describe());
    }
}
