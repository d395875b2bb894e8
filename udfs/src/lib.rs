//! Hakiri's SQL functions. `register_all` adds the JSON functions of
//! `datafusion-functions-json` (`json_get`, `json_get_str`, `json_contains`, the `->` and
//! `->>` operators, ...) for digging into nested API data kept as JSON text.

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;

/// Registers every function Hakiri provides on `registry` (a `SessionContext` works).
///
/// # Errors
/// When a function cannot be registered (a bug).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    datafusion_functions_json::register_all(registry)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn json_functions_read_nested_text() {
        let mut ctx = SessionContext::new();
        super::register_all(&mut ctx).unwrap();
        let batches = ctx
            .sql(r#"select json_get_str('{"user": {"login": "octo"}}', 'user', 'login') as login"#)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let col = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(col.value(0), "octo");
    }
}
