//! The wasm-bindgen JS and the split's link module as served: indentation and comment
//! lines taken out.
//!
//! Why: a first visit downloads both; wasm-bindgen writes a comment line per closure cast
//! ("Cast intrinsic for `Closure(…)`") and indents generously, about 800 bytes of the
//! brotli-compressed JS on 2026-12-06. cargo-leptos minifies the JS with a parser; this
//! does only what cannot change the program, so it needs none: a line's leading and
//! trailing white space, lines that are nothing but a `//` comment, and block comments
//! that start a line and end one (wasm-bindgen's JSDoc). Line breaks stay
//! (automatic semicolon insertion depends on them). Ordinary strings cannot span lines;
//! a template literal can, and inside one the text of a line is data: so a file where a
//! line holds an odd number of backticks is left as it is.

/// `js` without indentation, blank lines or comment lines; `None` when a template literal
/// may span lines or a block comment does not end a line.
pub fn minify(js: &str) -> Option<String> {
    if js.lines().any(|line| line.matches('`').count() % 2 == 1) {
        return None;
    }
    let mut lines = Vec::new();
    let mut in_comment = false;
    for line in js.lines().map(str::trim) {
        // A block comment that starts a line (wasm-bindgen's JSDoc) goes to where it ends
        // a line; one that ends mid-line is kept whole.
        if !in_comment && line.starts_with("/*") {
            in_comment = true;
        }
        if in_comment {
            if line.ends_with("*/") {
                in_comment = false;
                continue;
            }
            if line.contains("*/") {
                return None;
            }
            continue;
        }
        if !line.is_empty() && !line.starts_with("//") {
            lines.push(line);
        }
    }
    if in_comment {
        return None;
    }
    Some(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::minify;

    #[test]
    fn indentation_and_comment_lines_go() {
        let js = "export function f(a) {\n    // Cast intrinsic for `X`.\n    return `${a}`; // why\n\n}\n";
        assert_eq!(
            minify(js).as_deref(),
            Some("export function f(a) {\nreturn `${a}`; // why\n}\n")
        );
    }

    #[test]
    fn block_comments_that_start_and_end_lines_go() {
        let js = "/* @ts-self-types=\"./x.d.ts\" */\n/**\n * Docs.\n */\nexport function f() {}\n";
        assert_eq!(minify(js).as_deref(), Some("export function f() {}\n"));
        assert_eq!(minify("/* a */ let b = 1;\n"), None);
        assert_eq!(minify("/* never closed\nlet b = 1;\n"), None);
    }

    #[test]
    fn a_template_literal_across_lines_leaves_the_file_alone() {
        assert_eq!(minify("const s = `one\n    // two\n`;\n"), None);
    }
}
