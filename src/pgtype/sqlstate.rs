//! The SQLSTATE codes shardgate gives its refusals, named as Postgres's errcodes appendix
//! names them, so a client can branch on the code whatever front end it used.

/// `22P02 invalid_text_representation`: a value that does not read as its type.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// `22003 numeric_value_out_of_range`.
pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// `22007 invalid_datetime_format`.
pub const INVALID_DATETIME_FORMAT: &str = "22007";
/// `22008 datetime_field_overflow`.
pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
/// `22021 character_not_in_repertoire`: a NUL byte, or bytes that are not UTF-8.
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// `22P03 invalid_binary_representation`: a binary value of the wrong length or form.
pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
/// `22P04 bad_copy_file_format`: COPY data with too few or too many fields, or a bad escape.
pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
/// `22P05 untranslatable_character`: `\u0000` in jsonb.
pub const UNTRANSLATABLE_CHARACTER: &str = "22P05";
/// `23502 not_null_violation`.
pub const NOT_NULL_VIOLATION: &str = "23502";
/// `42701 duplicate_column`.
pub const DUPLICATE_COLUMN: &str = "42701";
/// `42703 undefined_column`.
pub const UNDEFINED_COLUMN: &str = "42703";
/// `42804 datatype_mismatch`: a JSON value of the wrong kind for its column.
pub const DATATYPE_MISMATCH: &str = "42804";
/// `54000 program_limit_exceeded`: a value longer than a field may be.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
