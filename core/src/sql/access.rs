//! What a statement does, decided once for every front end that grants by role: pgwire's
//! read-only role and MCP's `context.query` both ask [`HakiriStatement::access`].

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;

use super::HakiriStatement;

/// What running a statement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads: queries, `EXPLAIN`, `SHOW`, `SHOW PIPELINES`, `PLAN PIPELINE`.
    Read,
    /// Changes only the connection's session: `SET`, transactions, cursors (`DECLARE`,
    /// `FETCH`, `CLOSE`), `DISCARD`, `DEALLOCATE`.
    Session,
    /// Changes the project: DDL, DML, `COPY`, `RUN PIPELINE`, ...
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Session => "session",
            Access::Write => "write",
        }
    }
}

impl HakiriStatement {
    /// What running the statement needs.
    pub fn access(&self) -> Access {
        match self {
            HakiriStatement::ShowPipelines
            | HakiriStatement::ShowSources
            | HakiriStatement::ShowCreatePipeline { .. }
            | HakiriStatement::PlanPipeline { .. } => Access::Read,
            HakiriStatement::CreateSource { .. }
            | HakiriStatement::DropSource { .. }
            | HakiriStatement::CreatePipeline { .. }
            | HakiriStatement::DropPipeline { .. }
            | HakiriStatement::DropContextTable { .. }
            | HakiriStatement::RunPipeline { .. }
            | HakiriStatement::AlterPipeline { .. }
            | HakiriStatement::ResetCursor { .. } => Access::Write,
            HakiriStatement::DataFusion(s) => df_access(s),
        }
    }
}

fn df_access(statement: &DFStatement) -> Access {
    match statement {
        DFStatement::Statement(s) => statement_access(s),
        DFStatement::Explain(e) => match df_access(&e.statement) {
            // EXPLAIN ANALYZE runs the statement.
            Access::Write if e.options.analyze => Access::Write,
            _ => Access::Read,
        },
        DFStatement::Reset(_) => Access::Session,
        DFStatement::CreateExternalTable(_) | DFStatement::CopyTo(_) => Access::Write,
    }
}

/// What a SQL statement needs (for front ends that parse with sqlparser themselves).
pub fn statement_access(statement: &Statement) -> Access {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowViews { .. } => Access::Read,
        Statement::Explain {
            statement, analyze, ..
        } => match statement_access(statement) {
            Access::Write if *analyze => Access::Write,
            _ => Access::Read,
        },
        Statement::Set(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => Access::Session,
        _ => Access::Write,
    }
}
