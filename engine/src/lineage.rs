//! A run's lineage, for OpenLineage events: the source tables it reads (named by their
//! connection), the context table it writes, and which source columns feed which of its
//! columns, read off the pipeline's logical plan by `datafusion-openlineage`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion_openlineage::column::DirectKind;

use crate::engine::Engine;
use crate::types::{PipelineSpec, SourceSpec};

/// A dataset: OpenLineage's (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
}

/// One source column feeding an output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSource {
    pub dataset: Dataset,
    pub field: String,
    /// IDENTITY, TRANSFORMATION or AGGREGATION.
    pub subtype: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The source tables read, with their columns.
    pub inputs: Vec<(Dataset, Vec<String>)>,
    pub output: Option<Dataset>,
    /// Output column -> its sources, where the plan says.
    pub columns: BTreeMap<String, Vec<ColumnSource>>,
}

/// The namespace of a source's datasets: where its connection points, without
/// credentials.
/// File sources are named by the project folder their paths are relative to.
pub fn connection_namespace(source: &SourceSpec, project: &std::path::Path) -> String {
    let opt = |k: &str| source.options.get(k).map(String::as_str);
    let origin = |url: &str| {
        url::Url::parse(url).ok().map(|u| {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}", u.scheme(), u.host_str().unwrap_or(""))
        })
    };
    let found = match source.connector.as_str() {
        "http" => opt("base_url").and_then(origin),
        "postgres" => opt("url").and_then(origin).or_else(|| {
            Some(format!(
                "postgres://{}:{}",
                opt("host").unwrap_or("127.0.0.1"),
                opt("port").unwrap_or("5432")
            ))
        }),
        "s3" => opt("bucket").map(|b| format!("s3://{b}")),
        "file" => Some(format!("file://{}", project.display())),
        "github" => Some(
            opt("base_url")
                .and_then(origin)
                .unwrap_or_else(|| "https://api.github.com".into()),
        ),
        _ => None,
    };
    found.unwrap_or_else(|| format!("{}://{}", source.connector, source.name))
}

impl Engine {
    /// The lineage of a run of `spec`, read off `plan`: the logical plan the run itself
    /// executes (nothing is planned again for it).
    pub(crate) fn lineage(
        &self,
        spec: &PipelineSpec,
        plan: &LogicalPlan,
        store_namespace: &str,
    ) -> Lineage {
        // The pipeline's query is a SELECT; as an INSERT into its table the plan says
        // which columns of the output come from where. (Cloning the plan is cheap: its
        // inputs are behind `Arc`s.)
        let target = TableReference::partial("context", spec.target.as_str());
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let insert = LogicalPlan::Dml(DmlStatement::new(
            target,
            provider_as_source(Arc::new(EmptyTable::new(schema))),
            WriteOp::Insert(InsertOp::Append),
            Arc::new(plan.clone()),
        ));
        let config = datafusion_openlineage::OpenLineageConfig {
            job_namespace: "hakiri".into(),
            ..Default::default()
        };
        let found = datafusion_openlineage::extract(&insert, &config);
        // Its names are the plan's table references (`source.table`); ours say where
        // the connection points.
        // The store is <project>/.hakiri/store.
        let project = self
            .store()
            .root()
            .ancestors()
            .nth(2)
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let sources: BTreeMap<String, String> = self
            .sources()
            .into_iter()
            .map(|s| (s.name.clone(), connection_namespace(&s, &project)))
            .collect();
        let rename = |name: &str| -> Dataset {
            let source = name.split('.').next().unwrap_or(name);
            Dataset {
                namespace: sources
                    .get(source)
                    .cloned()
                    .unwrap_or_else(|| store_namespace.to_string()),
                name: name.to_string(),
            }
        };
        let mut lineage = Lineage {
            inputs: found
                .inputs
                .iter()
                .map(|i| {
                    (
                        rename(&i.name.name),
                        i.fields.iter().map(|f| f.name.clone()).collect(),
                    )
                })
                .collect(),
            output: Some(Dataset {
                namespace: store_namespace.to_string(),
                name: format!("context.{}", spec.target),
            }),
            columns: BTreeMap::new(),
        };
        if let Some(cols) = found
            .outputs
            .first()
            .and_then(|o| o.column_lineage.as_ref())
        {
            for (field, sources) in &cols.fields {
                lineage.columns.insert(
                    field.clone(),
                    sources
                        .direct
                        .iter()
                        .map(|(src, kind)| ColumnSource {
                            dataset: rename(&src.dataset.name),
                            field: src.column.clone(),
                            subtype: match kind {
                                DirectKind::Identity => "IDENTITY",
                                DirectKind::Transformation => "TRANSFORMATION",
                                DirectKind::Aggregation => "AGGREGATION",
                            },
                        })
                        .collect(),
                );
            }
        }
        lineage
    }
}
