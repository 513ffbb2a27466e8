"""The pages, one module per stage (and the Internals page's parts), and the CSV downloads of their figures."""
