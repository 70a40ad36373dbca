// The Vercel AI SDK's requests, for make record-clients: BASE is the gateway (through the
// recorder). Its OpenAI provider speaks the Responses API by default; its Anthropic provider the
// Messages API.
import { generateText, streamText, tool, stepCountIs } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { z } from "zod";

const base = process.env.BASE;
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: "unused" });
const anthropic = createAnthropic({ baseURL: `${base}/anthropic/v1`, apiKey: "unused" });
const weather = tool({
  description: "The weather in a city.",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});

const sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const haiku = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
const llama = "us.meta.llama3-2-1b-instruct-v1:0";
await generateText({ model: openai(llama), prompt: "Say hello." , providerOptions: { openai: { store: false } } });
await generateText({ model: openai.chat(llama), system: "Be brief.", prompt: "Say hello." });
await generateText({ model: openai(sonnet), prompt: "Please use weather for Lisbon.", tools: { weather },
  stopWhen: stepCountIs(3), providerOptions: { openai: { store: false } } });
await generateText({ model: openai.chat(sonnet), prompt: "Please use weather for Oslo.", tools: { weather }, stopWhen: stepCountIs(3) });
for await (const _ of streamText({ model: openai.chat(llama), prompt: "Stream a greeting." }).textStream) {}
for await (const _ of streamText({ model: openai(sonnet), prompt: "Stream a greeting.",
  providerOptions: { openai: { store: false } } }).textStream) {}
await generateText({ model: anthropic(haiku), prompt: "Say hello.", maxOutputTokens: 100 });
await generateText({ model: anthropic(haiku), prompt: "Please use weather for Rome.", tools: { weather }, stopWhen: stepCountIs(3) });
for await (const _ of streamText({ model: anthropic(sonnet), system: "Be brief.", prompt: "Stream a greeting." }).textStream) {}
