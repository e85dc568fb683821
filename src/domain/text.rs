//! Which characters a name or an email may hold, and the one normal form they are kept in.
//!
//! Two strings a person cannot tell apart on screen must not be two different orgs or two
//! different administrators. So the characters that render as nothing or move other text
//! around (format characters such as U+200B ZERO WIDTH SPACE and the bidirectional controls),
//! line and paragraph separators, spaces other than the plain ASCII one, private-use and
//! unassigned code points, and control characters are refused; what is left is stored in
//! Unicode Normalization Form C, so that a composed "é" and "e" + U+0301 are one name.
//! The categories come from `unicode-properties` (Unicode 18); a code point that a later
//! Unicode assigns is refused as unassigned until that crate knows it.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Why a character may not appear in a name or an email, for the error message; `None` when it
/// may. `space_allowed`: whether U+0020 is allowed (names yes, emails no).
pub fn refused(c: char, space_allowed: bool) -> Option<&'static str> {
    // ASCII, the common case, without the category table (same answers: the unit test
    // `ascii_answers_are_the_category_tables` compares them).
    if c.is_ascii() {
        return match c {
            ' ' if space_allowed => None,
            ' ' => Some("space"),
            c if c.is_ascii_control() => Some("control"),
            _ => None,
        };
    }
    by_category(c, space_allowed)
}

fn by_category(c: char, space_allowed: bool) -> Option<&'static str> {
    match c.general_category() {
        GeneralCategory::Control => Some("control"),
        GeneralCategory::Format => Some("invisible formatting"),
        GeneralCategory::Surrogate => Some("surrogate"),
        GeneralCategory::PrivateUse => Some("private-use"),
        GeneralCategory::Unassigned => Some("unassigned"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("line separator")
        }
        GeneralCategory::SpaceSeparator if c == ' ' && space_allowed => None,
        GeneralCategory::SpaceSeparator => Some("space"),
        _ => None,
    }
}

/// The first refused character of `raw`, described for the caller ("U+200B (invisible
/// formatting)"); the character itself is never echoed, since it would not show.
pub fn first_refused(raw: &str, space_allowed: bool) -> Option<String> {
    raw.chars().find_map(|c| {
        refused(c, space_allowed).map(|class| format!("U+{:04X} ({class})", u32::from(c)))
    })
}

/// Unicode Normalization Form C.
pub fn nfc(raw: &str) -> String {
    raw.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_answers_are_the_category_tables() {
        for c in (0u8..=0x7F).map(char::from) {
            for space_allowed in [false, true] {
                assert_eq!(
                    refused(c, space_allowed),
                    by_category(c, space_allowed),
                    "U+{:04X}",
                    u32::from(c)
                );
            }
        }
    }

    #[test]
    fn each_refused_class_is_named() {
        for (c, class) in [
            ('\u{0007}', "control"),
            ('\u{007F}', "control"),
            ('\u{0085}', "control"),
            ('\u{200B}', "invisible formatting"),
            ('\u{200D}', "invisible formatting"),
            ('\u{202E}', "invisible formatting"),
            ('\u{2066}', "invisible formatting"),
            ('\u{FEFF}', "invisible formatting"),
            ('\u{00AD}', "invisible formatting"),
            ('\u{E000}', "private-use"),
            ('\u{F0000}', "private-use"),
            ('\u{0378}', "unassigned"),
            ('\u{10FFFF}', "unassigned"),
            ('\u{2028}', "line separator"),
            ('\u{2029}', "line separator"),
            ('\u{00A0}', "space"),
            ('\u{2003}', "space"),
            ('\u{3000}', "space"),
        ] {
            assert_eq!(refused(c, true), Some(class), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn the_ascii_space_only_where_spaces_are_allowed() {
        assert_eq!(refused(' ', true), None);
        assert_eq!(refused(' ', false), Some("space"));
    }

    #[test]
    fn letters_marks_digits_punctuation_and_symbols_pass() {
        for c in [
            'A', 'é', 'ß', 'Ж', '中', '\u{0301}', '7', '٣', '-', '&', '€', '😀',
        ] {
            assert_eq!(refused(c, false), None, "{c:?}");
        }
    }

    #[test]
    fn the_refused_character_is_described_not_echoed() {
        assert_eq!(
            first_refused("Acme\u{200B}", true).as_deref(),
            Some("U+200B (invisible formatting)")
        );
        assert_eq!(first_refused("Acme Corp", true), None);
    }

    #[test]
    fn nfc_composes() {
        assert_eq!(nfc("Cafe\u{0301}"), "Caf\u{00E9}");
        assert_eq!(nfc("Caf\u{00E9}"), "Caf\u{00E9}");
    }
}
