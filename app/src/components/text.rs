//! A message's text on the page: [`crate::format`]'s blocks as DOM nodes.
//!
//! Text only ever becomes text nodes, never HTML; the only elements are the ones named
//! here, and the only attribute that carries message text is a link's `href`, which
//! [`crate::linkify`] guarantees starts with `http://` or `https://`. Links open in a new
//! tab without handing the opener, the referrer or any search-ranking endorsement to the
//! linked site. Mentions of the reader are in `<mark>`.
//!
//! A message that is one paragraph (nearly all are) is one `<p class="text">`; one with a
//! quote or a code block is a `<div class="text">` of `<p>`, `<blockquote>` and `<pre>`.
//! The server renders the same nodes that hydration expects ([`crate::format`] keeps text
//! nodes non-empty and never adjacent).
//!
//! Every block of prose has `dir="auto"`: a paragraph in Arabic or Hebrew reads right to
//! left, with its punctuation and numbers in place, whatever the paragraph before it is.
//! Code stays left to right.

use leptos::prelude::*;

use crate::format::{blocks, Block, Inline};

/// The body of a message whose text is `text`, read by `me`.
pub(crate) fn message_body(text: &str, me: Option<&str>) -> AnyView {
    let mut blocks = blocks(text, me);
    if blocks.len() == 1 {
        if let Some(Block::Paragraph(inlines)) = blocks.pop_if(|b| matches!(b, Block::Paragraph(_)))
        {
            return view! { <p class="text" dir="auto">{inline_views(inlines)}</p> }.into_any();
        }
    }
    let blocks = blocks
        .into_iter()
        .map(|block| match block {
            Block::Paragraph(inlines) => {
                view! { <p dir="auto">{inline_views(inlines)}</p> }.into_any()
            }
            Block::Quote(inlines) => {
                view! { <blockquote dir="auto">{inline_views(inlines)}</blockquote> }.into_any()
            }
            Block::Code(code) => view! { <pre dir="ltr"><code>{code}</code></pre> }.into_any(),
        })
        .collect_view();
    view! { <div class="text">{blocks}</div> }.into_any()
}

fn inline_views(inlines: Vec<Inline>) -> Vec<AnyView> {
    inlines
        .into_iter()
        .map(|inline| match inline {
            Inline::Text(text) => text.into_any(),
            Inline::Strong(children) => {
                view! { <strong>{inline_views(children)}</strong> }.into_any()
            }
            Inline::Emphasis(children) => view! { <em>{inline_views(children)}</em> }.into_any(),
            Inline::Code(code) => view! { <code>{code}</code> }.into_any(),
            Inline::Link(url) => {
                let href = url.clone();
                view! {
                    <a href=href target="_blank" rel="noopener noreferrer nofollow">{url}</a>
                }
                .into_any()
            }
            Inline::MentionOfMe(mention) => {
                view! { <mark class="mention-me">{mention}</mark> }.into_any()
            }
        })
        .collect()
}

/// The HTML the server sends for a message body, and that hydration expects. Rendering
/// to HTML needs the `ssr` feature, which `cargo test --workspace` turns on for this crate
/// (the server depends on it with `ssr`).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    fn html(text: &str, me: Option<&str>) -> String {
        message_body(text, me).to_html()
    }

    #[test]
    fn markup_is_escaped_and_only_http_urls_are_anchors() {
        assert_eq!(
            html("<img src=x onerror=alert(1)> & javascript:alert(2)", None),
            "<p dir=\"auto\" class=\"text\">&lt;img src=x onerror=alert(1)&gt; &amp; javascript:alert(2)<!></p>"
        );
        assert_eq!(
            html("see https://x.com/?a=1&b=2\"><script>", None),
            "<p dir=\"auto\" class=\"text\">see <a href=\"https://x.com/?a=1&amp;b=2\" target=\"_blank\" \
             rel=\"noopener noreferrer nofollow\">https://x.com/?a=1&amp;b=2</a>\
             \"&gt;&lt;script&gt;<!></p>"
        );
    }

    #[test]
    fn mentions_of_the_reader_are_marked_as_text() {
        assert_eq!(
            html("hi @Bob, see https://x.com/@bob and @[bob]<b>", Some("bob")),
            "<p dir=\"auto\" class=\"text\">hi <mark class=\"mention-me\">@Bob</mark>, see \
             <a href=\"https://x.com/@bob\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">\
             https://x.com/@bob</a> and <mark class=\"mention-me\">@[bob]</mark>&lt;b&gt;<!></p>"
        );
        // Nobody else's mentions, and nothing without a reader.
        assert_eq!(
            html("@bobby @alice", Some("bob")),
            "<p dir=\"auto\" class=\"text\">@bobby @alice<!></p>"
        );
        assert_eq!(
            html("@bob", None),
            "<p dir=\"auto\" class=\"text\">@bob<!></p>"
        );
    }

    #[test]
    fn formatting_is_elements_around_escaped_text() {
        assert_eq!(
            html("**<b>x</b>** _<i>_ `<script>`", None),
            "<p dir=\"auto\" class=\"text\"><strong>&lt;b&gt;x&lt;/b&gt;<!></strong> \
             <em>&lt;i&gt;<!></em> <code>&lt;script&gt;</code><!></p>"
        );
        assert_eq!(
            html("> <q>\n```\n<img src=x onerror=alert(1)>\n```\ndone", None),
            "<div class=\"text\"><blockquote dir=\"auto\">&lt;q&gt;<!></blockquote>\
             <pre dir=\"ltr\"><code>&lt;img src=x onerror=alert(1)&gt;</code></pre>\
             <p dir=\"auto\">done<!></p><!></div>"
        );
    }
}
