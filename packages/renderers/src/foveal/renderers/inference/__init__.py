"""The inference API shared by servers, router and clients: wire models (`wire`), OpenAI-compatible chat
models (`openai`) and the serializable `RemoteInferenceClient` (`client`)."""
