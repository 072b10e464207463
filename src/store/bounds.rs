//! The size limits on what is stored (`database.maxStoredTextBytes`,
//! `database.maxTranscriptEntries`).

use crate::agent::TranscriptEntry;

/// How much of a message is kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest stored text, answer, error, serialized usage and transcript string, in bytes.
    pub(super) max_text_bytes: usize,
    /// Most transcript entries kept per message.
    pub(super) max_transcript_entries: usize,
}

/// `text` cut to at most `max` bytes, marker included, on a character boundary; `None` when it
/// already fits. The marker says how many bytes were cut: `… [cut: N bytes]`.
pub(super) fn cut(text: &str, max: usize) -> Option<String> {
    if text.len() <= max {
        return None;
    }
    // Sized for the largest count this cut can report, so the result never exceeds `max`.
    let reserve = marker(text.len()).len();
    let keep = text.floor_char_boundary(max.saturating_sub(reserve));
    let mut cut = String::with_capacity(max);
    cut.push_str(&text[..keep]);
    cut.push_str(&marker(text.len() - keep));
    Some(cut)
}

fn marker(removed: usize) -> String {
    format!("… [cut: {removed} bytes]")
}

/// Applies [`cut`] in place; returns whether anything was cut.
pub(super) fn cut_in_place(text: &mut String, max: usize) -> bool {
    match cut(text, max) {
        Some(shorter) => {
            *text = shorter;
            true
        }
        None => false,
    }
}

/// The first `limits.max_transcript_entries` entries with every text cut to the limit, and
/// whether anything was dropped or cut. Borrowed (no copy) when everything fits, as it
/// nearly always does.
pub(super) fn bound_transcript(
    transcript: &[TranscriptEntry],
    limits: Limits,
) -> (std::borrow::Cow<'_, [TranscriptEntry]>, bool) {
    let max = limits.max_text_bytes;
    let fits = |text: &str| text.len() <= max;
    let entry_fits = |entry: &TranscriptEntry| match entry {
        TranscriptEntry::AssistantText { text } => fits(text),
        TranscriptEntry::ToolUse { name, input } => fits(name) && fits(input),
        TranscriptEntry::ToolResult { content, .. } => fits(content),
        TranscriptEntry::Permission { tool, reason, .. } => {
            fits(tool) && reason.as_deref().is_none_or(fits)
        }
    };
    if transcript.len() <= limits.max_transcript_entries && transcript.iter().all(entry_fits) {
        return (std::borrow::Cow::Borrowed(transcript), false);
    }
    let mut owned = transcript.to_vec();
    let truncated = bound_owned_transcript(&mut owned, limits);
    (std::borrow::Cow::Owned(owned), truncated)
}

/// [`bound_transcript`] in place.
fn bound_owned_transcript(transcript: &mut Vec<TranscriptEntry>, limits: Limits) -> bool {
    let mut truncated = transcript.len() > limits.max_transcript_entries;
    transcript.truncate(limits.max_transcript_entries);
    let max = limits.max_text_bytes;
    for entry in transcript.iter_mut() {
        truncated |= match entry {
            TranscriptEntry::AssistantText { text } => cut_in_place(text, max),
            TranscriptEntry::ToolUse { name, input } => {
                cut_in_place(name, max) | cut_in_place(input, max)
            }
            TranscriptEntry::ToolResult { content, .. } => cut_in_place(content, max),
            TranscriptEntry::Permission { tool, reason, .. } => {
                cut_in_place(tool, max)
                    | reason
                        .as_mut()
                        .is_some_and(|reason| cut_in_place(reason, max))
            }
        };
    }
    truncated
}
