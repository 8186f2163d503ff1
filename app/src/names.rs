//! Display names that cannot pass for someone else's.
//!
//! Two checks keep one person from looking like another in a room:
//!
//! - [`validate`] decides whether a name may be used at all. It refuses characters that
//!   are invisible or reorder text (so "alice" plus a zero-width space, or a right-to-left
//!   override, cannot be told apart from "alice" on screen), and names that mix writing
//!   systems the way look-alike spoofs do ("аlice" with a Cyrillic "а"). The mixing rule
//!   is the "highly restrictive" level of Unicode Technical Standard #39: one script, or
//!   Latin together with the scripts of Japanese (Han, Hiragana, Katakana), Chinese (Han,
//!   Bopomofo) or Korean (Han, Hangul). Digits, spaces, punctuation, emoji and combining
//!   marks (scripts Common and Inherited) go with any script.
//! - [`key`] is the form two names are compared in: Unicode compatibility caseless
//!   matching (NFKC with full case folding), so "Alice", "ALICE", fullwidth "Ａｌｉｃｅ"
//!   and "Straße"/"STRASSE" each collide.
//!
//! What is not covered: whole-script look-alikes (an all-Cyrillic "аре" next to a Latin
//! "ape") and same-script confusables ("rn" and "m", "l" and "I"). Refusing those needs
//! the UTS #39 confusables table, much larger than the rest of this module, and would
//! refuse many genuine names.

use std::fmt;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, ScriptExtension, UnicodeScript};

/// The longest name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused. Each message tells the person what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// A control character (tab, newline, bell, …).
    Control(char),
    /// A character that shows as nothing, or nearly nothing (zero-width space and joiner,
    /// word joiner, byte order mark, Hangul fillers and the other default-ignorable code
    /// points).
    Invisible(char),
    /// A bidirectional control that can reorder how the name is displayed.
    DirectionControl(char),
    /// An unassigned or private-use code point, which each device draws its own way.
    Unassigned(char),
    /// Letters from two writing systems that may not be mixed.
    MixedScripts(Script, Script),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("Enter a name."),
            NameError::TooLong => write!(f, "A name is at most {MAX_NAME_CHARS} characters."),
            NameError::Control(_) => f.write_str("A name cannot contain control characters."),
            NameError::Invisible(c) => write!(
                f,
                "A name cannot contain invisible characters (here {}): they would let two \
                 different names look the same.",
                code_point(c)
            ),
            NameError::DirectionControl(c) => write!(
                f,
                "A name cannot contain text-direction controls (here {}): they change how \
                 the name is displayed.",
                code_point(c)
            ),
            NameError::Unassigned(c) => write!(
                f,
                "A name cannot contain {}: it is an unassigned or private-use character.",
                code_point(c)
            ),
            NameError::MixedScripts(a, b) => write!(
                f,
                "A name cannot mix {} and {} letters, because look-alike letters from \
                 another alphabet could impersonate someone. Use one alphabet.",
                a.full_name(),
                b.full_name()
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Checks a name as typed and returns the form to store and display: trimmed, otherwise
/// exactly as typed. Its length is counted in characters (code points). This is the
/// server's check: [`validate_shape`], then no unassigned or private-use code points and
/// no mix of writing systems.
///
/// It is not put in NFC: that would gain no safety, since [`key`] already compares an "é"
/// typed as "e" plus a combining accent equal to a precomposed one.
pub fn validate(raw: &str) -> Result<String, NameError> {
    let name = validate_shape(raw)?;
    if let Some(c) = name.chars().find(|c| c.script() == Script::Unknown) {
        return Err(NameError::Unassigned(c));
    }
    check_scripts(&name)?;
    Ok(name)
}

/// The part of [`validate`] that needs no Unicode script tables, which the browser checks
/// before it asks to join: not empty, at most [`MAX_NAME_CHARS`], no control, invisible or
/// direction-control characters. The script rules' tables (unicode-script's, about 46 KB
/// of wasm) stay on the server, which answers a join with a name they refuse with the
/// same message, shown at the same field.
pub fn validate_shape(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(NameError::Empty);
    }
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    let mut previous = None;
    for c in name.chars() {
        if c.is_control() {
            return Err(NameError::Control(c));
        }
        if is_bidi_control(c) {
            return Err(NameError::DirectionControl(c));
        }
        if is_invisible(c) && !is_emoji_presentation_selector(c, previous) {
            return Err(NameError::Invisible(c));
        }
        previous = Some(c);
    }
    Ok(name.to_owned())
}

/// The form of a name two names are compared in: equal keys mean the names collide.
///
/// This is the compatibility caseless match of the Unicode Standard (definition D146):
/// NFD, full case folding, NFKD, full case folding again, NFKD (composed back here, which
/// does not change equality). Beyond it, default-ignorable code points are dropped (as
/// Unicode's NFKC_Casefold does; the only one [`validate`] admits is the emoji
/// presentation selector) and runs of whitespace count as one space, since a browser
/// shows "a  b" and "a b" alike.
pub fn key(name: &str) -> String {
    let once: String = name.trim().nfd().default_case_fold().nfkd().collect();
    let folded = once.chars().default_case_fold().nfkc();
    let mut key = String::with_capacity(once.len());
    let mut pending_space = false;
    for c in folded {
        if c.is_whitespace() {
            pending_space = !key.is_empty();
        } else if !is_invisible(c) {
            if pending_space {
                key.push(' ');
                pending_space = false;
            }
            key.push(c);
        }
    }
    key
}

/// Bidirectional formatting characters: embeddings and overrides (U+202A–U+202E),
/// isolates (U+2066–U+2069), and the implicit marks (U+200E, U+200F, U+061C). The marks
/// are default-ignorable too; they are named here so the refusal says what they do.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Default_Ignorable_Code_Point from the Unicode Character Database
/// (DerivedCoreProperties.txt, unchanged from Unicode 15 to 17): characters a renderer
/// draws as nothing when it does not support them, among them the zero-width space,
/// non-joiner and joiner, the word joiner, the byte order mark, variation selectors, the
/// Hangul fillers and tag characters. Also the interlinear annotation controls
/// (U+FFF9–U+FFFB), which are not default-ignorable but hide the text between them in
/// renderers that support them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Phone keyboards type many emoji with a trailing presentation selector ("❤" + U+FE0F),
/// so U+FE0E/U+FE0F stay allowed right after a symbol. After a letter or digit they could
/// only serve to make a name differ invisibly, and [`key`] ignores them anyway.
fn is_emoji_presentation_selector(c: char, previous: Option<char>) -> bool {
    matches!(c, '\u{FE0E}' | '\u{FE0F}')
        && previous.is_some_and(|p| {
            !p.is_ascii() && !p.is_alphanumeric() && !p.is_whitespace() && !is_invisible(p)
        })
}

/// One character's scripts, widened as UTS #39 does for the writing systems that combine
/// several scripts: Japanese (`jpan`: Han, Hiragana, Katakana), Korean (`kore`: Han,
/// Hangul) and Chinese with Bopomofo (`hanb`).
#[derive(Clone, Copy)]
struct ScriptSet {
    base: ScriptExtension,
    jpan: bool,
    kore: bool,
    hanb: bool,
}

impl ScriptSet {
    fn of(ext: ScriptExtension) -> Self {
        let han = ext.contains_script(Script::Han);
        ScriptSet {
            base: ext,
            jpan: han
                || ext.contains_script(Script::Hiragana)
                || ext.contains_script(Script::Katakana),
            kore: han || ext.contains_script(Script::Hangul),
            hanb: han || ext.contains_script(Script::Bopomofo),
        }
    }

    fn intersect(&mut self, other: ScriptSet) {
        self.base.intersect_with(other.base);
        self.jpan &= other.jpan;
        self.kore &= other.kore;
        self.hanb &= other.hanb;
    }

    fn is_empty(&self) -> bool {
        self.base.is_empty() && !self.jpan && !self.kore && !self.hanb
    }

    fn has_latin(&self) -> bool {
        self.base.contains_script(Script::Latin)
    }
}

/// UTS #39 "highly restrictive": the name's letters all share one (widened) script, or
/// each is Latin or belongs to one of Japanese, Korean or Chinese-with-Bopomofo.
fn check_scripts(name: &str) -> Result<(), NameError> {
    let mut common = ScriptSet {
        base: ScriptExtension::default(),
        jpan: true,
        kore: true,
        hanb: true,
    };
    // Whether every letter so far is Latin or Japanese, Latin or Korean, Latin or Chinese.
    let (mut latin_jpan, mut latin_kore, mut latin_hanb) = (true, true, true);
    let mut first = None;
    for c in name.chars() {
        let ext = c.script_extension();
        if ext.is_common() || ext.is_inherited() {
            continue;
        }
        let set = ScriptSet::of(ext);
        common.intersect(set);
        latin_jpan &= set.has_latin() || set.jpan;
        latin_kore &= set.has_latin() || set.kore;
        latin_hanb &= set.has_latin() || set.hanb;
        let script = main_script(c, ext);
        let first = *first.get_or_insert(script);
        if common.is_empty() && !(latin_jpan || latin_kore || latin_hanb) {
            return Err(NameError::MixedScripts(first, script));
        }
    }
    Ok(())
}

/// The script to name in a refusal: the character's own, or for a character shared by
/// several scripts (such as the Japanese long-vowel mark), the first of them.
fn main_script(c: char, ext: ScriptExtension) -> Script {
    match c.script() {
        Script::Common | Script::Inherited => ext.iter().next().unwrap_or(Script::Common),
        script => script,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(name: &str) -> NameError {
        validate(name).expect_err(name)
    }

    #[test]
    fn names_are_trimmed_and_stored_as_typed() {
        assert_eq!(validate("  alice ").unwrap(), "alice");
        assert_eq!(validate("Ａｌｉｃｅ").unwrap(), "Ａｌｉｃｅ");
        // "Zoë" typed with a combining diaeresis is kept so, and is the same name as a
        // precomposed "Zoë".
        assert_eq!(validate("Zoe\u{0308}").unwrap(), "Zoe\u{0308}");
        assert_eq!(key("Zoe\u{0308}"), key("Zo\u{00EB}"));
        assert_eq!(
            validate(&"\u{00E9}".repeat(MAX_NAME_CHARS)).unwrap(),
            "\u{00E9}".repeat(MAX_NAME_CHARS)
        );
    }

    #[test]
    fn empty_long_and_control_names_are_refused() {
        assert_eq!(refusal(" \t "), NameError::Empty);
        assert_eq!(refusal(&"a".repeat(MAX_NAME_CHARS + 1)), NameError::TooLong);
        assert_eq!(refusal("a\u{7}b"), NameError::Control('\u{7}'));
    }

    #[test]
    fn case_and_width_variants_collide() {
        let alice = key("alice");
        for variant in ["Alice", "ALICE", " aLiCe ", "Ａｌｉｃｅ", "ＡＬＩＣＥ"] {
            assert_eq!(key(variant), alice, "{variant:?}");
        }
        assert_ne!(key("alice2"), alice);
        assert_eq!(key("Алиса"), key("АЛИСА"));
    }

    #[test]
    fn full_case_folding_maps_sharp_s_and_final_sigma() {
        assert_eq!(key("Straße"), "strasse");
        assert_eq!(key("STRASSE"), key("straße"));
        // Capital sharp s folds to "ss" too, not just to "ß".
        assert_eq!(key("STRAẞE"), "strasse");
        assert_eq!(key("ΟΔΥΣΣΕΥΣ"), key("οδυσσευς"));
        // Compatibility forms: the "ﬁ" ligature and circled letters.
        assert_eq!(key("ﬁona"), key("FIONA"));
        assert_eq!(key("ⓐⓛⓘⓒⓔ"), key("alice"));
    }

    #[test]
    fn whitespace_variants_collide() {
        let key_ab = key("alice bob");
        assert_eq!(key("alice  bob"), key_ab);
        assert_eq!(key("alice\u{3000}bob"), key_ab);
        assert_eq!(key("alice\u{00A0}bob"), key_ab);
        assert_ne!(key("alicebob"), key_ab);
    }

    #[test]
    fn the_browsers_check_leaves_only_the_script_rules_to_the_server() {
        // What the shape check refuses, the full check refuses the same way.
        for raw in [
            "",
            "   ",
            &"x".repeat(33),
            "a\u{7}b",
            "al\u{200B}ice",
            "\u{202E}ecila",
        ] {
            assert_eq!(validate_shape(raw).unwrap_err(), refusal(raw), "{raw:?}");
        }
        // Mixed alphabets and unassigned code points pass it, trimmed, and only the
        // server's check refuses them.
        for raw in [" \u{0430}lice ", "bob\u{E000}"] {
            assert_eq!(validate_shape(raw).unwrap(), raw.trim());
            assert!(validate(raw).is_err(), "{raw:?}");
        }
        assert_eq!(validate_shape(" Zoë ❤\u{FE0F} ").unwrap(), "Zoë ❤\u{FE0F}");
    }

    #[test]
    fn latin_mixed_with_cyrillic_or_greek_is_refused() {
        // A Cyrillic "а" (U+0430) at the start.
        assert_eq!(
            refusal("\u{0430}lice"),
            NameError::MixedScripts(Script::Cyrillic, Script::Latin)
        );
        // A Greek omicron in the middle.
        assert_eq!(
            refusal("b\u{03BF}b"),
            NameError::MixedScripts(Script::Latin, Script::Greek)
        );
        // A Cyrillic combining mark is Cyrillic even though it has no letter of its own.
        assert!(matches!(
            refusal("alice\u{0483}"),
            NameError::MixedScripts(Script::Latin, _)
        ));
        assert!(matches!(
            refusal("alice علي"),
            NameError::MixedScripts(Script::Latin, Script::Arabic)
        ));
        assert!(matches!(
            refusal("αлиса"),
            NameError::MixedScripts(Script::Greek, Script::Cyrillic)
        ));
        let message = refusal("\u{0430}lice").to_string();
        assert!(
            message.contains("Cyrillic") && message.contains("Latin"),
            "{message}"
        );
    }

    #[test]
    fn single_script_names_are_allowed() {
        for name in [
            "алиса",
            "Алиса 2000!",
            "Ὀδυσσεύς",
            "علي",
            "R2-D2",
            "Jean-Luc O'Neil",
            "Zoe\u{0308}",
            "42",
            "ÆØÅ æøå",
        ] {
            assert!(validate(name).is_ok(), "{name:?}: {:?}", validate(name));
        }
    }

    #[test]
    fn east_asian_script_combinations_are_allowed() {
        for name in [
            // Japanese: Han, Hiragana and Katakana, with the long-vowel mark.
            "山田たろう",
            "ヤマダ・タロー",
            "山田タロウ",
            "Tanaka 田中たろう",
            // Korean: Hangul with Han, and with Latin.
            "김민준 金敏俊",
            "Kim 민준",
            // Chinese with Bopomofo.
            "王小明ㄅㄆ",
        ] {
            assert!(validate(name).is_ok(), "{name:?}: {:?}", validate(name));
        }
        // Hangul with kana is no single writing system.
        assert!(matches!(
            refusal("민준たろう"),
            NameError::MixedScripts(Script::Hangul, Script::Hiragana)
        ));
        // Japanese with Cyrillic neither.
        assert!(matches!(
            refusal("山田алиса"),
            NameError::MixedScripts(Script::Han, Script::Cyrillic)
        ));
    }

    #[test]
    fn invisible_characters_are_refused() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{034F}',
            '\u{180E}',
            '\u{3164}',
            '\u{FFA0}',
            '\u{FFF9}',
            '\u{E0041}',
            '\u{E0100}',
        ] {
            assert_eq!(
                refusal(&format!("ali{c}ce")),
                NameError::Invisible(c),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // A zero-width joiner glues emoji into one picture, but is still refused.
        assert_eq!(refusal("👩\u{200D}💻"), NameError::Invisible('\u{200D}'));
        // A Hangul filler alone looks like an empty name.
        assert_eq!(refusal("\u{3164}"), NameError::Invisible('\u{3164}'));
        let message = refusal("ali\u{200D}ce").to_string();
        assert!(message.contains("U+200D"), "{message}");
    }

    #[test]
    fn direction_controls_are_refused() {
        // "alice" spelled backwards behind a right-to-left override displays as "alice".
        assert_eq!(
            refusal("\u{202E}ecila"),
            NameError::DirectionControl('\u{202E}')
        );
        for c in [
            '\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert_eq!(refusal(&format!("bob{c}")), NameError::DirectionControl(c));
        }
    }

    #[test]
    fn unassigned_and_private_use_characters_are_refused() {
        assert_eq!(refusal("bob\u{E000}"), NameError::Unassigned('\u{E000}'));
        assert_eq!(refusal("bob\u{0378}"), NameError::Unassigned('\u{0378}'));
    }

    #[test]
    fn emoji_are_allowed_with_their_presentation_selector() {
        assert_eq!(validate("🦀 crab").unwrap(), "🦀 crab");
        assert_eq!(validate("❤\u{FE0F} Ana").unwrap(), "❤\u{FE0F} Ana");
        // The selector changes nothing visible that a collision should depend on.
        assert_eq!(key("❤\u{FE0F} Ana"), key("❤ ANA"));
        // After a letter it can only hide a difference.
        assert_eq!(refusal("ana\u{FE0F}"), NameError::Invisible('\u{FE0F}'));
        assert_eq!(refusal("\u{FE0F}ana"), NameError::Invisible('\u{FE0F}'));
    }
}
