"""The Streamlit page script: `harness leaderboard` runs it; the store URL comes in $HARNESS_LEADERBOARD_STORE."""

import streamlit as st

from leaderboard import views

st.set_page_config(page_title="merge-harness leaderboard", layout="wide")
views.main()
