"""The plugins that ship with pipectl, registered through the same manager as installed ones."""
