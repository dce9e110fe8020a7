"""The Streamlit web UI (thin pages over the Python API)."""
