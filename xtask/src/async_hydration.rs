//! Takes tachys's asynchronous hydration path out of the release wasm.
//!
//! Why: tachys (0.2) compiles an async twin of every view's hydration, `hydrate_async`,
//! for two uses Banter has neither of: hydrating from `leptos::mount::hydrate_from_async`
//! (and `hydrate_lazy`, lazy routes), and views that hydrate while data loads. It cannot
//! tell at compile time: `AnyView` (every `.into_any()`, the router's routes, `<Show>`'s
//! children) keeps a pointer to `hydrate_async::<T>` for the view it erases, so the async
//! twin of each erased view, and of everything inside it, is linked in and reachable
//! through the function table. On 2026-12-05 that was 648 functions, 22% of the
//! optimized wasm (394 KB brotli-compressed before, 306 KB after).
//!
//! What this does: after wasm-bindgen, every function whose demangled name contains
//! `hydrate_async` gets the body `unreachable`; wasm-opt then drops what only those bodies
//! called. Banter hydrates with `leptos::mount::hydrate_body`, synchronously, so none of
//! them runs. It runs on the main module and on each module split off from it
//! (src/split.rs); the modules call each other's functions through the shared table, by
//! slot, and a function the other side calls so keeps its body.
//!
//! Guaranteed: the pass refuses a module that has an async hydration entry point
//! (`hydrate_from_async`, `hydrate_lazy`), so a front end that starts hydrating
//! asynchronously fails the build instead of trapping in the browser; and it refuses a
//! module where it finds nothing to remove, so when tachys stops compiling the path in
//! (the fix belongs upstream: build `hydrate_async` only for apps that ask for it) the
//! build says this step can go. Not guaranteed: that no other async hydration caller
//! appears in a later leptos; the Playwright suite, run on the release build, would trap on
//! one.

use std::collections::HashSet;

use walrus::ir::{dfs_in_order, Const, Instr, InstrLocId, InstrSeq, Unreachable, Value, Visitor};
use walrus::{ConstExpr, ElementItems, ElementKind, ExportItem, FunctionId, FunctionKind, Module};

/// Names that mark the async hydration path, demangled (the split's main module keeps
/// rustc's mangled names: xtask/src/split.rs).
const ASYNC_PATH: &str = "hydrate_async";

/// Leptos's entry points that hydrate asynchronously: with one of them linked in, the
/// async path is used and must stay.
const ASYNC_ENTRY_POINTS: [&str; 2] = [
    "leptos::mount::hydrate_from_async",
    "leptos::mount::hydrate_lazy",
];

/// What [`strip`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Stripped {
    /// Functions whose body became `unreachable`.
    pub functions: usize,
    /// Their instructions before (walrus's count; wasm-opt removes what they called).
    pub instructions: u64,
    /// The module's functions the split modules call through the table.
    pub called_from_split: usize,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error(
        "the front end hydrates asynchronously ({0} is linked in): the async hydration path \
         is needed; drop this step (xtask/src/async_hydration.rs)"
    )]
    UsesAsyncHydration(String),
    #[error(
        "no function named *{ASYNC_PATH}* in the wasm: either its name section is gone or \
         tachys no longer compiles the async hydration path in, and this step \
         (xtask/src/async_hydration.rs) can go"
    )]
    NothingToStrip,
}

/// Makes every function of the async hydration path `unreachable`, in place. `split_off`
/// are the modules cut from the same wasm (src/split.rs): they call this module's
/// functions through the shared function table, by slot, so a function in a slot that one
/// of them names keeps its body, as one this module calls does.
pub fn strip(module: &mut Module, split_off: &[Module]) -> Result<Stripped, StripError> {
    if let Some(entry) = module.funcs.iter().find_map(|f| {
        let name = demangled(f.name.as_deref()?);
        ASYNC_ENTRY_POINTS
            .iter()
            .any(|entry| name.starts_with(entry))
            .then_some(name)
    }) {
        return Err(StripError::UsesAsyncHydration(entry));
    }
    let called_from_split = functions_in_slots(module, &slots_named(split_off));
    let mut stripped = Stripped {
        functions: 0,
        instructions: 0,
        called_from_split: called_from_split.len(),
    };
    for id in async_only(module, &called_from_split) {
        let FunctionKind::Local(local) = &mut module.funcs.get_mut(id).kind else {
            continue;
        };
        stripped.instructions += local.size();
        let entry = local.entry_block();
        let body = &mut local.block_mut(entry).instrs;
        body.clear();
        body.push((Instr::Unreachable(Unreachable {}), Default::default()));
        stripped.functions += 1;
    }
    if stripped.functions == 0 {
        return Err(StripError::NothingToStrip);
    }
    Ok(stripped)
}

/// A function's name as Rust writes it (without the hash); a name that is not mangled, as
/// it is.
fn demangled(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// The functions named as the async path that no other function refers to, directly or
/// through one that is kept. The name is not enough: rustc merges functions whose code is
/// identical (LLVM's MergeFunctions) and the one left keeps one of their names, so a
/// function named `…::hydrate_async::{{closure}}` may also be the body of a synchronous
/// `hydrate`, which calls it (seen on 2026-12-05: `(A, B, C)`'s async closure, called from
/// a reactive view's `hydrate`).
fn async_only(module: &Module, also_kept: &HashSet<FunctionId>) -> Vec<FunctionId> {
    let named: HashSet<FunctionId> = module
        .funcs
        .iter()
        .filter(|f| {
            f.name
                .as_deref()
                .is_some_and(|n| demangled(n).contains(ASYNC_PATH))
        })
        .map(|f| f.id())
        .collect();
    let mut kept: HashSet<FunctionId> = HashSet::new();
    // Functions that must keep their code and whose references are still to be followed.
    let mut to_follow: Vec<FunctionId> = module
        .funcs
        .iter()
        .map(|f| f.id())
        .filter(|id| !named.contains(id))
        .collect();
    // What the rest of the module (exports, the start function) names directly.
    to_follow.extend(module.exports.iter().filter_map(|e| match e.item {
        ExportItem::Function(id) => Some(id),
        _ => None,
    }));
    to_follow.extend(module.start);
    to_follow.extend(also_kept.iter().copied());
    while let Some(id) = to_follow.pop() {
        if !kept.insert(id) {
            continue;
        }
        let FunctionKind::Local(local) = &module.funcs.get(id).kind else {
            continue;
        };
        let mut references = References::default();
        dfs_in_order(&mut references, local, local.entry_block());
        for callee in references.0 {
            if named.contains(&callee) && !kept.contains(&callee) {
                to_follow.push(callee);
            }
        }
    }
    let mut only: Vec<FunctionId> = named.difference(&kept).copied().collect();
    only.sort_unstable_by_key(|id| id.index());
    only
}

/// The function table slots the code of `modules` calls through: a split module calls
/// the main module's functions as `i32.const <slot>; call_indirect`.
fn slots_named(modules: &[Module]) -> HashSet<i32> {
    let mut calls = SlotCalls::default();
    for module in modules {
        for function in module.funcs.iter() {
            if let FunctionKind::Local(local) = &function.kind {
                calls.previous = None;
                dfs_in_order(&mut calls, local, local.entry_block());
            }
        }
    }
    calls.slots
}

/// The functions `module`'s active element segments put in those table slots.
fn functions_in_slots(module: &Module, slots: &HashSet<i32>) -> HashSet<FunctionId> {
    let mut found = HashSet::new();
    for element in module.elements.iter() {
        let (ElementKind::Active { offset, .. }, ElementItems::Functions(functions)) =
            (&element.kind, &element.items)
        else {
            continue;
        };
        let ConstExpr::Value(Value::I32(start)) = offset else {
            continue;
        };
        for (slot, &function) in (*start..).zip(functions) {
            if slots.contains(&slot) {
                found.insert(function);
            }
        }
    }
    found
}

/// Collects the constants that come right before a `call_indirect`, in code order.
#[derive(Default)]
struct SlotCalls {
    previous: Option<i32>,
    slots: HashSet<i32>,
}

impl<'instr> Visitor<'instr> for SlotCalls {
    fn visit_instr(&mut self, instr: &'instr Instr, _: &'instr InstrLocId) {
        match instr {
            Instr::CallIndirect(_) => {
                self.slots.extend(self.previous);
            }
            Instr::Const(Const {
                value: Value::I32(value),
            }) => {
                self.previous = Some(*value);
                return;
            }
            _ => {}
        }
        self.previous = None;
    }

    fn start_instr_seq(&mut self, _: &'instr InstrSeq) {
        self.previous = None;
    }
}

/// The functions an instruction sequence names: calls, `ref.func`.
#[derive(Default)]
struct References(Vec<FunctionId>);

impl<'instr> Visitor<'instr> for References {
    fn visit_function_id(&mut self, &function: &FunctionId) {
        self.0.push(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walrus::{FunctionBuilder, FunctionId, ModuleConfig, ValType};

    /// A module with one function per name, each returning 7; none exported (an export is
    /// used from outside, so it keeps its body).
    fn module(names: &[&str]) -> (Module, Vec<FunctionId>) {
        let mut module = Module::with_config(ModuleConfig::new());
        let ids = names
            .iter()
            .map(|name| {
                let mut builder = FunctionBuilder::new(&mut module.types, &[], &[ValType::I32]);
                builder.name((*name).to_owned());
                builder.func_body().i32_const(7);
                builder.finish(vec![], &mut module.funcs)
            })
            .collect();
        (module, ids)
    }

    fn is_unreachable(module: &Module, id: FunctionId) -> bool {
        let FunctionKind::Local(local) = &module.funcs.get(id).kind else {
            panic!("not a local function");
        };
        let body = &local.block(local.entry_block()).instrs;
        matches!(body.as_slice(), [(Instr::Unreachable(_), _)])
    }

    #[test]
    fn only_the_async_path_becomes_unreachable() {
        let (mut module, ids) = module(&[
            "<T as tachys::view::any_view::IntoAny>::into_any::hydrate_async::{{closure}}::h1",
            "tachys::reactive_graph::<impl tachys::view::RenderHtml for F>::hydrate_async::h2",
            "<T as tachys::view::any_view::IntoAny>::into_any::hydrate_from_server::h3",
            "tachys::view::RenderHtml::hydrate::h4",
        ]);
        let stripped = strip(&mut module, &[]).unwrap();
        assert_eq!(stripped.functions, 2);
        assert!(stripped.instructions >= 2);
        let unreachable: Vec<bool> = ids.iter().map(|&id| is_unreachable(&module, id)).collect();
        assert_eq!(unreachable, [true, true, false, false]);
        // The result is still a valid module.
        Module::from_buffer(&module.emit_wasm()).unwrap();
    }

    #[test]
    fn a_function_named_async_that_other_code_calls_keeps_its_body() {
        let (mut module, ids) = module(&[
            "tachys::view::tuples::<impl RenderHtml for (A,B,C)>::hydrate_async::{{closure}}::h1",
            "tachys::view::RenderHtml::hydrate_async::h2",
            "tachys::view::RenderHtml::hydrate_async::h3",
        ]);
        // A synchronous `hydrate` calls the first (merged code); the first calls the second.
        let mut hydrate = FunctionBuilder::new(&mut module.types, &[], &[ValType::I32]);
        hydrate.name("tachys::reactive_graph::<impl RenderHtml for F>::hydrate::h4".into());
        hydrate.func_body().call(ids[0]);
        let hydrate = hydrate.finish(vec![], &mut module.funcs);
        module.exports.add("hydrate", hydrate);
        let mut first = FunctionBuilder::new(&mut module.types, &[], &[ValType::I32]);
        first.func_body().call(ids[1]);
        let body = first.local_func(vec![]);
        let FunctionKind::Local(local) = &mut module.funcs.get_mut(ids[0]).kind else {
            unreachable!()
        };
        *local = body;

        let stripped = strip(&mut module, &[]).unwrap();
        assert_eq!(stripped.functions, 1);
        let unreachable: Vec<bool> = ids.iter().map(|&id| is_unreachable(&module, id)).collect();
        assert_eq!(unreachable, [false, false, true]);
    }

    #[test]
    fn an_async_entry_point_keeps_the_path() {
        let (mut module, ids) = module(&[
            "leptos::mount::hydrate_from_async::h1",
            "tachys::view::RenderHtml::hydrate_async::h2",
        ]);
        assert!(matches!(
            strip(&mut module, &[]),
            Err(StripError::UsesAsyncHydration(name)) if name.starts_with("leptos::mount::hydrate_from_async")
        ));
        assert!(!is_unreachable(&module, ids[1]));
    }

    #[test]
    fn a_function_a_split_module_calls_through_the_table_keeps_its_body() {
        let (mut main, ids) = module(&[
            "tachys::view::tuples::<impl RenderHtml for (A,B,C)>::hydrate_async::{{closure}}::h1",
            "tachys::view::RenderHtml::hydrate_async::h2",
        ]);
        let table = main
            .tables
            .add_local(false, 8, None, walrus::RefType::FUNCREF);
        main.elements.add(
            ElementKind::Active {
                table,
                offset: ConstExpr::Value(Value::I32(3)),
            },
            ElementItems::Functions(ids.clone()),
        );
        // The split module calls slot 3 (the first function), as a stub does.
        let mut split = Module::with_config(ModuleConfig::new());
        let split_table = split
            .tables
            .add_local(false, 8, None, walrus::RefType::FUNCREF);
        let ty = split.types.add(&[], &[ValType::I32]);
        let mut stub = FunctionBuilder::new(&mut split.types, &[], &[ValType::I32]);
        // A constant that only happens to be a slot number (4) is not a call.
        stub.func_body()
            .i32_const(4)
            .drop()
            .i32_const(3)
            .call_indirect(ty, split_table);
        stub.finish(vec![], &mut split.funcs);

        assert_eq!(strip(&mut main, &[split]).map(|s| s.functions), Ok(1));
        assert!(!is_unreachable(&main, ids[0]));
        assert!(is_unreachable(&main, ids[1]));
    }

    #[test]
    fn mangled_names_are_read_demangled() {
        // As rustc mangles them (legacy scheme), which the split's main module keeps.
        let (mut module, ids) = module(&[
            "_ZN6tachys4view10RenderHtml13hydrate_async17h0123456789abcdefE",
            "_ZN6tachys4view10RenderHtml7hydrate17h0123456789abcdefE",
        ]);
        assert_eq!(strip(&mut module, &[]).map(|s| s.functions), Ok(1));
        assert!(is_unreachable(&module, ids[0]));
        assert!(!is_unreachable(&module, ids[1]));

        let (mut module, _) = module_with_entry();
        assert!(matches!(
            strip(&mut module, &[]),
            Err(StripError::UsesAsyncHydration(name)) if name == "leptos::mount::hydrate_from_async"
        ));
    }

    fn module_with_entry() -> (Module, Vec<FunctionId>) {
        module(&[
            "_ZN6leptos5mount18hydrate_from_async17h0123456789abcdefE",
            "_ZN6tachys4view10RenderHtml13hydrate_async17h0123456789abcdefE",
        ])
    }

    #[test]
    fn nothing_to_strip_is_an_error() {
        let (mut module, _) = module(&["tachys::view::RenderHtml::hydrate::h1"]);
        assert_eq!(strip(&mut module, &[]), Err(StripError::NothingToStrip));
    }
}
