"""Reading a run: the summary's metrics, the contract audit, text summaries and the HTML report."""
