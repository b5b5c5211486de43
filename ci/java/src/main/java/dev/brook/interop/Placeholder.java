package dev.brook.interop;
final class Placeholder {}
