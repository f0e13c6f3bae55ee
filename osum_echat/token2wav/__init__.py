"""CosyVoice-300M-25Hz token2wav: speech tokens -> 22,050 Hz audio (flow matching + HiFT), prompt front-end."""
from osum_echat.token2wav.frontend import SpeakerPrompt
from osum_echat.token2wav.token2wav import Token2Wav

__all__ = ["SpeakerPrompt", "Token2Wav"]
