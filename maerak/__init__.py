"""maerak: NIKL 2024 대화 맥락 추론 (나 유형) — shared core (schema, prompt, profiles, files)."""
