"""Read, validate, split and profile the task's data."""

from tunewise.data.read import InvalidRecords, load_records
from tunewise.data.records import Dataset, Issue, Record

__all__ = ["Dataset", "InvalidRecords", "Issue", "Record", "load_records"]
