"""dangjian-qa: retrieval question answering over Party-building documents of the health system."""
