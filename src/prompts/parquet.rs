//! Prompt sets stored as Apache Parquet (how Hugging Face datasets are usually published):
//! one column of strings, chosen like a JSON field.

use super::sets::pick_field;
use crate::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

/// The strings of one column of a parquet file (nulls skipped). The column is `field`, or the
/// first of the usual prompt column names, or the only column.
pub(crate) fn load_parquet(path: &Path, field: Option<&str>) -> Result<Vec<String>> {
    let bad = |message: String| Error::Invalid(format!("{}: {message}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<&str> = schema.root_schema().get_fields().iter().map(|f| f.name()).collect();
    let column = pick_field(&names, field, path, "columns")?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(format!("cannot read rows: {e}")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        match row.get_column_iter().find(|(name, _)| name.as_str() == column).map(|(_, value)| value) {
            Some(Field::Str(text)) => out.push(text.clone()),
            Some(Field::Null) | None => {}
            Some(other) => return Err(bad(format!("row {i}: column `{column}` is not a string ({other})"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// A snappy-compressed file with a string column `prompt` (one null) and an integer `id`.
    fn write(path: &Path, prompts: &[Option<&str>]) {
        let schema = Arc::new(
            parse_message_type("message schema { OPTIONAL BINARY prompt (UTF8); REQUIRED INT64 id; }").unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build());
        let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let values: Vec<ByteArray> = prompts.iter().flatten().map(|p| ByteArray::from(*p)).collect();
        let levels: Vec<i16> = prompts.iter().map(|p| i16::from(p.is_some())).collect();
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<ByteArrayType>().write_batch(&values, Some(&levels), None).unwrap();
        column.close().unwrap();
        let ids: Vec<i64> = (0..prompts.len() as i64).collect();
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn reads_the_prompt_column_skipping_nulls() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("train-00000-of-00001.parquet");
        write(&path, &[Some("Write a poem."), None, Some("Bake bread — how?")]);
        assert_eq!(load_parquet(&path, None).unwrap(), vec!["Write a poem.", "Bake bread — how?"]);
        assert_eq!(load_parquet(&path, Some("prompt")).unwrap().len(), 2);
        let set = crate::prompts::PromptSet::load(path.to_str().unwrap(), None).unwrap();
        assert_eq!(set.prompts, vec!["Write a poem.", "Bake bread — how?"]);
        let err = load_parquet(&path, Some("id")).unwrap_err().to_string();
        assert!(err.contains("`id` is not a string") && err.contains("train-00000"), "{err}");
        let err = load_parquet(&path, Some("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_parquet_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("broken.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = load_parquet(&path, None).unwrap_err().to_string();
        assert!(err.contains("broken.parquet") && err.contains("not a readable parquet file"), "{err}");
    }
}
