"""First-party page scripts of the web UI (run by Streamlit, not imported)."""
