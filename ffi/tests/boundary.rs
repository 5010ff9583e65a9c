//! Every `extern "C"` function of the crate runs its body behind the panic boundary
//! (`guard` or `guard_value`), so that no panic can unwind into C. A source-level check: a
//! new entry point without one fails here.

use std::path::Path;

#[test]
fn every_extern_c_function_is_guarded() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut checked, mut exported) = (0, 0);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        exported += text.matches("#[no_mangle]").count();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("extern \"C\" fn ") {
            let after = &rest[at..];
            let name: String = after["extern \"C\" fn ".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // the body: from the signature to the first closing brace at column 0
            let end = after.find("\n}\n").expect("function body end");
            let body = &after[..end];
            assert!(
                body.contains("guard(") || body.contains("guard_value("),
                "{}: `{name}` has no panic boundary (wrap its body in guard/guard_value)",
                path.display()
            );
            checked += 1;
            rest = &after[end..];
        }
    }
    assert!(checked >= 40, "found only {checked} extern \"C\" functions");
    assert_eq!(checked, exported, "every #[no_mangle] function was checked");
}
