//! Client-only entry, built by trunk (`--features csr`) for front-end work against a
//! running server.

#![recursion_limit = "256"]

fn main() {
    #[cfg(feature = "csr")]
    {
        console_error_panic_hook::set_once();
        leptos::mount::mount_to_body(app::components::App);
    }
}
