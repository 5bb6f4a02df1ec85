//! Small text helpers every part of the CLI uses for its one-line messages.

/// Shorten a user-supplied value for an error message.
pub(crate) fn show(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

/// An I/O error's message without the "(os error N)" suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
