"""Import of the old file-based memories (one JSON file per field) and export in the same layout.

`catalogue` names the files, `source` reads a source tree (bounded), `convert` turns a file's
JSON into a field value by documented rules (or refuses it with file and JSON path), `plan`
builds one user's import document, `importer` applies plans through the API's SQL path, and
`export` writes what `GET /api/memory/export` and `make export` hand out.
"""
