"""The Streamlit leaderboard over the results store (`harness leaderboard` starts it)."""
