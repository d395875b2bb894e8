//! Hakiri's SQL extension: statements for sources and pipelines, parsed by wrapping
//! DataFusion's parser (anything else is handed to DataFusion unchanged).

mod access;
mod parser;

pub use access::{Access, statement_access};

pub use parser::{HakiriStatement, PipelineBody, parse_pipeline_body, parse_statements};

#[cfg(test)]
mod fuzz;
