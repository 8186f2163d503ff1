//! The style sheet as served: comments, indentation and blank lines taken out.
//!
//! Why: a first visit downloads the whole sheet, and its comments are for whoever edits it
//! (about 500 bytes of the brotli-compressed sheet on 2026-12-06). cargo-leptos minifies
//! with lightningcss; this does only what cannot change a rule's meaning, so it needs no
//! CSS parser: outside strings, a comment becomes a space, and a line's leading and trailing
//! white space and empty lines go (a line break between tokens is white space, and stays
//! one). Strings (`content: "● "`) are copied as they are; a comment's text never ends
//! a string.

/// `css` without comments, indentation or blank lines.
pub fn minify(css: &str) -> String {
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    let mut quote: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        match quote {
            Some(q) => {
                // A backslash escapes the next character, a closing quote among them.
                if c == '\\' {
                    let escaped: String = rest.chars().take(2).collect();
                    out.push_str(&escaped);
                    rest = &rest[escaped.len()..];
                    continue;
                }
                if c == q {
                    quote = None;
                }
            }
            None => {
                if rest.starts_with("/*") {
                    rest = rest[2..].find("*/").map_or("", |end| &rest[2 + end + 2..]);
                    // A comment separates tokens as white space does: `a/**/b` is not `ab`.
                    out.push(' ');
                    continue;
                }
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::minify;

    #[test]
    fn comments_indentation_and_blank_lines_go() {
        let css =
            "/* Colours. */\n:root {\n  --ink: #222; /* text */\n}\n\n\n.a  .b { color: red; }\n";
        assert_eq!(
            minify(css),
            ":root {\n--ink: #222;\n}\n.a  .b { color: red; }"
        );
    }

    #[test]
    fn strings_are_kept_as_written() {
        let css = ".x::before { content: \"/* not a comment */ \\\" \"; }\n.y { content: '●  '; }";
        assert_eq!(minify(css), css);
    }

    #[test]
    fn a_comment_spanning_lines_joins_what_is_around_it() {
        assert_eq!(
            minify("a {\n  color: red; /* one\n  two */\n}"),
            "a {\ncolor: red;\n}"
        );
        assert_eq!(
            minify("a { color: red; } /* unterminated"),
            "a { color: red; }"
        );
        assert_eq!(minify("a/**/b {}"), "a b {}");
    }
}
