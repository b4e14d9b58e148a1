import warnings

# cozepy imports authlib.jose, which warns of its own deprecation: nothing of ours to change.
# Set here because conftest's imports load cozepy before pytest's own filters apply.
warnings.filterwarnings(
    "ignore", message="authlib.jose module is deprecated", category=DeprecationWarning
)
