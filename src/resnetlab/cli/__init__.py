"""Thin commands: parse -> build -> call the library -> print."""
